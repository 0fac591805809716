"""Type stub for the C kernel flows/pb/_mes.c."""

import numpy as np
import numpy.typing as npt

def run(
    ptr: npt.NDArray[np.int64],
    idx: npt.NDArray[np.int64],
    rank: npt.NDArray[np.int64],
    w: npt.NDArray[np.float64],
    clo: npt.NDArray[np.float64],
    chi: npt.NDArray[np.float64],
    wtot: npt.NDArray[np.float64],
    alive: npt.NDArray[np.int8],
    x_lo: float,
    x_hi: float,
    lo: npt.NDArray[np.float64],
    hi: npt.NDArray[np.float64],
    sel: npt.NDArray[np.int64],
    /,
) -> int: ...

def neighbours(x: float, /) -> tuple[float, float]: ...
