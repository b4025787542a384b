"""`base`: plain fine-tuning, and with `reset_state_dict` the from-scratch baseline."""
from agents.agent import Agent
from agents.registry import register


@register("base")
class BaseAgent(Agent):
    """Trains on each task's new data only. `reset_state_dict` re-initialises the model before
    every task; with `concatenate_tasksets` that is retraining from scratch on all data so far
    (the joint upper bound), without it the "transfer-free" lower bound."""

    defaults = {"reset_state_dict": False}
    choices = {"reset_state_dict": (True, False)}

    def before_task(self, task, resumed: bool = False) -> None:
        if self.options["reset_state_dict"] and not resumed:
            self.ctx.reset_model(task.index)
