"""The native core and its C++ tests, built with AddressSanitizer + UndefinedBehaviorSanitizer,
run clean on 1 and 2 ranks (scripts/sanitize_native.sh)."""
import subprocess

from conftest import REPO, mpi_env


def test_native_core_is_clean_under_asan_and_ubsan(tmp_path):
    env = {**mpi_env(), "BUILD_DIR": str(tmp_path / "build-sanitize")}
    proc = subprocess.run(["bash", str(REPO / "scripts/sanitize_native.sh")], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "sanitize_native: ok" in proc.stdout
    assert proc.stdout.count("== test_native on") == 2
