// Worker: one persistent background thread that runs one job at a time.
//
// submit() hands a job over through a condition variable; wait() blocks until it finished and
// returns its result or re-raises its exception. The thread lives from the first submit() to
// stop(); it never touches Python.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <exception>
#include <functional>
#include <mutex>
#include <thread>

namespace cpp_loader {

class Worker {
 public:
  using Job = std::function<int64_t()>;

  Worker() = default;
  Worker(const Worker&) = delete;
  Worker& operator=(const Worker&) = delete;
  ~Worker() { stop(); }

  // Starts `job` on the thread; std::logic_error if a job is already pending.
  void submit(Job job);
  // Blocks until the pending job is done; its result, or rethrows its exception.
  int64_t wait();
  bool pending() const;
  // Waits for a pending job (discarding its outcome), then joins the thread.
  void stop() noexcept;

 private:
  void loop();

  mutable std::mutex mutex_;
  std::condition_variable cv_;
  Job job_;
  bool has_job_ = false;   // a job was submitted and its outcome not yet collected by wait()
  bool running_ = false;   // the thread is executing job_
  bool stopping_ = false;
  int64_t result_ = 0;
  std::exception_ptr error_;
  std::thread thread_;
};

}  // namespace cpp_loader
