"""The test references that import torchvision at import time (Zennit's ResNet canonizers; Quantus imports Zennit
when it is installed): torchvision does not import beside torch 2.13 here, and none of its code is ever called for
the plain conv nets these tests use, so an inert stand-in takes its place."""

import sys
import types

import pytest


def torchvision_stand_in() -> None:
    for name in ("torchvision", "torchvision.models", "torchvision.models.resnet"):
        sys.modules.setdefault(name, types.ModuleType(name))
    resnet = sys.modules["torchvision.models.resnet"]
    for cls in ("Bottleneck", "BasicBlock"):
        if not hasattr(resnet, cls):
            setattr(resnet, cls, type(cls, (), {}))


def zennit():
    if "zennit" not in sys.modules:
        torchvision_stand_in()
    return pytest.importorskip("zennit", reason="Zennit is a test reference: pip install --no-deps zennit")


def quantus():
    if "quantus" not in sys.modules:
        torchvision_stand_in()
    return pytest.importorskip("quantus", reason="Quantus is a test reference: pip install --no-deps quantus")
