"""distillscope: knowledge distillation you can see."""

__version__ = "0.1.0"
