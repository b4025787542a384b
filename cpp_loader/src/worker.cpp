#include "worker.hpp"

#include <stdexcept>
#include <utility>

namespace cpp_loader {

void Worker::submit(Job job) {
  std::unique_lock<std::mutex> lock(mutex_);
  if (has_job_) throw std::logic_error("a job is already pending");
  if (!thread_.joinable()) {
    stopping_ = false;
    thread_ = std::thread([this] { loop(); });
  }
  job_ = std::move(job);
  has_job_ = running_ = true;
  error_ = nullptr;
  cv_.notify_all();
}

int64_t Worker::wait() {
  std::unique_lock<std::mutex> lock(mutex_);
  if (!has_job_) throw std::logic_error("no job is pending");
  cv_.wait(lock, [this] { return !running_; });
  has_job_ = false;
  if (error_) std::rethrow_exception(std::exchange(error_, nullptr));
  return result_;
}

bool Worker::pending() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return has_job_;
}

void Worker::stop() noexcept {
  {
    std::unique_lock<std::mutex> lock(mutex_);
    cv_.wait(lock, [this] { return !running_; });
    has_job_ = false;
    error_ = nullptr;
    stopping_ = true;
    cv_.notify_all();
  }
  if (thread_.joinable()) thread_.join();
}

void Worker::loop() {
  std::unique_lock<std::mutex> lock(mutex_);
  for (;;) {
    cv_.wait(lock, [this] { return stopping_ || (running_ && job_); });
    if (stopping_) return;
    Job job = std::move(job_);
    job_ = nullptr;
    lock.unlock();
    int64_t result = 0;
    std::exception_ptr error;
    try {
      result = job();
    } catch (...) {
      error = std::current_exception();
    }
    lock.lock();
    result_ = result;
    error_ = error;
    running_ = false;
    cv_.notify_all();
  }
}

}  // namespace cpp_loader
