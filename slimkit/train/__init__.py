"""Training: the shared loop (``train`` + ``TrainOptions``) and the ``finetune`` step."""
from slimkit.train.loop import TrainCallback, train
from slimkit.train.options import TrainOptions

__all__ = ["TrainOptions", "TrainCallback", "train"]
