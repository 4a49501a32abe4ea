"""pandas frames and series, as parquet when pyarrow is installed, else pandas' pickle."""

from __future__ import annotations

import hashlib
import importlib.util
from typing import Any

import pandas as pd

from kstep.materializers._base import Materializer

_PARQUET = importlib.util.find_spec("pyarrow") is not None


class PandasMaterializer(Materializer):
    """pandas DataFrames and Series; rows can be split by `.map`."""

    types = (pd.DataFrame, pd.Series)

    def save(self, value: pd.DataFrame | pd.Series) -> None:
        frame = value.to_frame() if isinstance(value, pd.Series) else value
        if _PARQUET:
            with self.open("frame.parquet", "wb") as file:
                frame.to_parquet(file)
        else:
            with self.open("frame.pkl", "wb") as file:
                frame.to_pickle(file)

    def _frame(self) -> pd.DataFrame:
        location = self.location
        if location.exists("frame.parquet"):
            with self.open("frame.parquet", "rb") as file:
                return pd.read_parquet(file)
        with self.open("frame.pkl", "rb") as file:
            frame: pd.DataFrame = pd.read_pickle(file)
            return frame

    def load(self, data_type: type) -> Any:
        frame = self._frame()
        if issubclass(data_type, pd.Series):
            return frame.iloc[:, 0]
        return frame

    def extract_metadata(self, value: pd.DataFrame | pd.Series) -> dict[str, Any]:
        frame = value.to_frame() if isinstance(value, pd.Series) else value
        return {"shape": list(frame.shape), "columns": [str(c) for c in frame.columns][:100]}

    def content_hash(self, value: pd.DataFrame | pd.Series) -> str:
        names = list(value.columns) if isinstance(value, pd.DataFrame) else [value.name]
        digest = hashlib.sha256(str(names).encode())
        digest.update(pd.util.hash_pandas_object(value, index=True).values.tobytes())
        return digest.hexdigest()

    def item_count(self) -> int:
        return len(self._frame())

    def load_item(self, index: int) -> Any:
        return self._frame().iloc[index]
