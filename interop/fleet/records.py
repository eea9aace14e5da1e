"""The schemas of the files build-many and merge read back (summaries given to ``merge`` and
``--baseline``, the ``fleet.json`` records ``--resume`` reuses, a child's result): each is data from
disk, read by ``support.safe_io`` and validated here (pydantic, strict types) before any key is
used, so a wrong type, a missing key or an odd status is one ``interop:`` line, never a traceback."""

from __future__ import annotations

from typing import Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, model_validator

Number = Union[int, float]
Status = Literal["passed", "failed", "timeout", "out-of-memory", "crashed", "resumed"]


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)


class Cell(_Open):
    status: str
    rel_l2: Optional[Number] = None
    bytes: Optional[int] = None


class Variant(_Open):
    target: str
    variant: str
    passed: Optional[bool] = None
    psnr_db: Optional[Number] = None
    bytes: Optional[int] = None


class ErrorInfo(_Open):
    type: Optional[str] = None
    message: Optional[str] = None
    signature: Optional[str] = None


class ModelRecord(_Open):
    name: str = Field(min_length=1, max_length=256)
    status: Status
    targets: dict[str, Cell] = {}
    variants: list[Variant] = []
    error: Optional[ErrorInfo] = None
    seconds: Optional[Number] = None
    peak_rss_bytes: Optional[int] = None


class Shard(_Open):
    index: int = Field(ge=0)
    count: int = Field(ge=1, le=100_000)

    @model_validator(mode="after")
    def _in_range(self) -> "Shard":
        if self.index >= self.count:
            raise ValueError(f"shard index {self.index} is not below its count {self.count}")
        return self


class Summary(_Open):
    models: list[ModelRecord]
    not_run: list[str] = []
    interrupted: bool = False
    shard: Optional[Shard] = None
    passed: Optional[bool] = None


class FleetRecord(_Open):
    """``<out>/<name>/fleet.json``: what --resume may reuse (and then re-checks)."""

    name: str
    status: Status
    hash: str
    artifacts: list[str] = Field(min_length=1)
    artifact_sha256: dict[str, str]
    report: str


class ChildResult(_Open):
    outcome: Literal["built", "error", "out-of-memory"]
    report: Optional[dict[str, Any]] = None
    error: Optional[dict[str, Any]] = None
