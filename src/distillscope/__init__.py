"""distillscope: knowledge distillation you can see."""

from distillscope import resolvers

__version__ = "0.1.0"

resolvers.register()
