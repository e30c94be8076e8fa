"""Open Inference Protocol (KServe v2 / Triton REST): :mod:`.codec` (bodies) and :mod:`.routes`."""

from presso.service.oip.routes import install

__all__ = ["install"]
