"""pydantic models, as JSON validated back into their class."""

from __future__ import annotations

from pydantic import BaseModel

from kstep.materializers._builtin import StructuredMaterializer


class PydanticMaterializer(StructuredMaterializer):
    """pydantic models (subclasses of `pydantic.BaseModel`)."""

    types = (BaseModel,)
