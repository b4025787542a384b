"""Train a continual-learning agent on a sequence of tasks, on one rank or as a distributed job.

    python main.py                                   # the default experiment, one process
    mpirun -np 2 python main.py --backend torch      # the same on two ranks
    python main.py --config joint                    # a named preset from config.yaml

See README.md for every option, the presets, and how to launch with srun, torchrun or horovodrun.
The command line itself is `trainer.cli` (installed with the project, so scripts can import it).
"""
import sys

from trainer.cli import main

if __name__ == "__main__":
    sys.exit(main())
