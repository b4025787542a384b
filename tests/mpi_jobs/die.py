"""Run main.py with one rank failing at its 5th training step: `die.py MODE RANK -- main.py flags`.
MODE is `raise` (an exception) or `kill` (SIGKILL, no chance to clean up)."""
import os
import signal
import sys

from agents.agent import Agent
from trainer import cli
from trainer.launch import detect

mode, victim = sys.argv[1], int(sys.argv[2])
flags = sys.argv[sys.argv.index("--") + 1:]
original = Agent.train_step
calls = 0


def failing_train_step(self, x, y):
    global calls
    calls += 1
    if calls == 5 and detect().rank == victim:
        if mode == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        raise RuntimeError("injected failure")
    return original(self, x, y)


Agent.train_step = failing_train_step
sys.exit(cli.main(flags))
