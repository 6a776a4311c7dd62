"""A slot's job server: `python -m hydra_plugins.wycifar_launcher._server MODULE...`.

Started by the launcher with the slot's environment (OMP_NUM_THREADS, CUDA_VISIBLE_DEVICES), it
imports MODULE... once (`hydra.launcher.preload`: Lightning and torch take seconds of CPU to
import, which every fresh process would pay again), then reads one request a line on stdin,
`{"job": JOB.pkl, "console": console.log}`, and forks a child that runs `_job.main(JOB.pkl)` with
its output in the console log, in a session of its own. The server never runs a job itself: each
job is a fresh process that never ran another, as under the plain start, only with the imports
done. It forks only while it runs one Python thread, and the imports must not start CUDA (torch
does not at import). Native thread pools started at import (OpenBLAS with OMP_NUM_THREADS > 1)
stop themselves at fork (their pthread_atfork handler).

It answers on the file descriptor that was its stdout, one JSON line each: `{"ready": pid}` after
the imports (or `{"error": ...}` and exit), `{"pid": pid}` once a job's child runs, `{"pid": pid,
"status": wait status}` when it ended. One job at a time: a slot runs one job at a time.
"""

import atexit
import importlib
import json
import os
import select
import signal
import subprocess
import sys
import threading
import time
import traceback

from hydra_plugins.wycifar_launcher import _job


def die_with_parent() -> None:
    """In a job's process before it runs: SIGTERM when its parent dies (Linux)."""
    try:
        import ctypes

        ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:
        pass


def send(fd: int, **message) -> None:
    os.write(fd, (json.dumps(message) + "\n").encode())


def run_job(job_file: str, console: str, preloaded: list[str]) -> None:
    """In the forked child: the job as `python -m ..._job JOB.pkl` would run it, then exit."""
    code = 1
    try:
        os.setsid()  # its own session and process group, as the plain start gives it
        die_with_parent()
        null = os.open(os.devnull, os.O_RDONLY)
        log = os.open(console, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        for source, target in ((null, 0), (log, 1), (log, 2)):
            os.dup2(source, target)
        os.close(null)
        os.close(log)
        sys.argv = [_job.__file__, job_file]
        if "numpy" in sys.modules:  # a fresh process draws its own seed; a forked one shares the server's
            sys.modules["numpy"].random.seed()
        code = _job.main(job_file, preloaded)
    except SystemExit as stop:  # as Python ends on it: an int is the exit status, anything else is printed
        code = stop.code if isinstance(stop.code, int) else int(stop.code is not None)
        if not isinstance(stop.code, int) and stop.code is not None:
            print(stop.code, file=sys.stderr)
    except KeyboardInterrupt:
        traceback.print_exc()
        code = -signal.SIGINT  # as Python ends on an uncaught Ctrl-C: killed by SIGINT
    except BaseException:
        traceback.print_exc()
    try:  # what a Python process does as it ends: wait for its threads, run its exit handlers
        threading._shutdown()
        atexit._run_exitfuncs()
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        if code < 0:
            signal.signal(-code, signal.SIG_DFL)
            os.kill(os.getpid(), -code)
        os._exit(code & 0xFF)


def main(modules: list[str]) -> int:
    reply = os.dup(1)
    os.dup2(2, 1)  # what the imports print goes to the server's log, not into its answers
    try:
        for name in modules:
            importlib.import_module(name)
    except BaseException as error:
        send(reply, error=f"importing {name}: {type(error).__name__}: {error}")
        return 1
    preloaded = [name for name in modules if name in sys.modules]
    send(reply, ready=os.getpid())
    for line in sys.stdin:
        request = json.loads(line)
        if threading.active_count() != 1:
            send(reply, error=f"{threading.active_count()} Python threads after the imports: a fork is unsafe")
            return 1
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            os.close(reply)
            run_job(request["job"], request["console"], preloaded)
        send(reply, pid=pid)
        _, status = os.waitpid(pid, 0)
        send(reply, pid=pid, status=status)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))


# -- the launcher's side -------------------------------------------------------------------------


class Server:
    """The launcher's end of a slot's job server, started with the slot's environment."""

    def __init__(self, modules: list[str], env: dict[str, str], log: str) -> None:
        self.log = log
        with open(log, "ab") as stderr:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "hydra_plugins.wycifar_launcher._server", *modules],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=stderr,
                env=env,
                start_new_session=True,
                preexec_fn=die_with_parent if sys.platform.startswith("linux") else None,
            )
        self.buffer = b""
        self.ready = False
        self.error = ""

    def message(self, timeout: float | None) -> dict | None:
        """The server's next answer; None where none came within `timeout` s; {} where it ended."""
        while b"\n" not in self.buffer:
            if not select.select([self.process.stdout], [], [], timeout)[0]:
                return None
            chunk = os.read(self.process.stdout.fileno(), 65536)
            if not chunk:
                return {}
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\n", 1)
        return json.loads(line)

    def start(self, job_file: str, console: str) -> "ForkedJob | None":
        """The job forked by the server (the first waits for its imports), or None where the server
        cannot start it (its imports failed, it died): `error` says why."""
        try:
            if not self.ready:
                answer = self.message(None)
                self.ready = "ready" in answer
            if self.ready:
                self.process.stdin.write(json.dumps({"job": job_file, "console": console}).encode() + b"\n")
                self.process.stdin.flush()
                answer = self.message(None)
        except OSError:  # the server died: a broken pipe
            answer = {}
        if "pid" in answer:
            return ForkedJob(self, answer["pid"])
        self.close()
        self.error = answer.get("error") or f"it ended with exit status {self.process.returncode}"
        return None

    def close(self) -> None:
        """End the server (once no job of it runs): its stdin closed, it exits."""
        try:
            self.process.stdin.close()
        except OSError:
            pass
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process.stdout.close()
        try:
            os.unlink(self.log)
        except OSError:
            pass


class ForkedJob:
    """A job its slot's server forked, with what the launcher uses of a subprocess.Popen: pid,
    poll(), wait(), send_signal(), kill(), returncode (negative: killed by that signal)."""

    def __init__(self, server: Server, pid: int) -> None:
        self.server, self.pid, self.returncode = server, pid, None
        try:  # a pidfd names this process only, even once its pid is free again
            self.pidfd = os.pidfd_open(pid)
        except (AttributeError, OSError):
            self.pidfd = None

    def poll(self) -> int | None:
        if self.returncode is None:
            self._check(0)
        return self.returncode

    def wait(self) -> int:
        while self.returncode is None:
            self._check(None)
        return self.returncode

    def send_signal(self, signum: int) -> None:
        if self.poll() is not None:
            return
        try:
            if self.pidfd is not None:
                signal.pidfd_send_signal(self.pidfd, signum)
            else:
                os.kill(self.pid, signum)
        except ProcessLookupError:
            pass

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def _check(self, timeout: float | None) -> None:
        answer = self.server.message(timeout)
        if answer and "status" in answer:
            self.returncode = os.waitstatus_to_exitcode(answer["status"])
        elif answer == {}:  # the server died: its job gets SIGTERM (PR_SET_PDEATHSIG) and ends too
            if self._alive():
                time.sleep(0.1)
                return
            code = self.server.process.wait()
            self.returncode = code if code < 0 else -signal.SIGTERM
        if self.returncode is not None and self.pidfd is not None:
            os.close(self.pidfd)
            self.pidfd = None

    def _alive(self) -> bool:
        if self.pidfd is not None:
            return not select.select([self.pidfd], [], [], 0)[0]
        try:
            os.kill(self.pid, 0)
            return True
        except ProcessLookupError:
            return False
