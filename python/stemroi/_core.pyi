# Type stub of the private compiled module stemroi._core (areas append theirs).
from typing import Callable, Dict, Optional, Tuple, overload

import numpy as np
import numpy.typing as npt

__version__: str
torch_version: str
with_cuda: bool

def resolve_n_threads(n_threads: int) -> int: ...
@overload
def gaussian_filter(images: npt.NDArray[np.float32], sigma: float, truncate: float = ..., n_threads: int = ...) -> npt.NDArray[np.float32]: ...
@overload
def gaussian_filter(images: npt.NDArray[np.float64], sigma: float, truncate: float = ..., n_threads: int = ...) -> npt.NDArray[np.float64]: ...
@overload
def uniform_filter(images: npt.NDArray[np.float32], size: int, n_threads: int = ...) -> npt.NDArray[np.float32]: ...
@overload
def uniform_filter(images: npt.NDArray[np.float64], size: int, n_threads: int = ...) -> npt.NDArray[np.float64]: ...
def write_model_file(path: str, tensors: Dict[str, np.ndarray], metadata: Dict[str, str]) -> None: ...
def read_model_file(path: str) -> Tuple[Dict[str, np.ndarray], Dict[str, str]]: ...

# data (overlap groups)
def overlap_groups(
    patches: npt.NDArray[np.float32],
    labels: Optional[npt.NDArray[np.int64]] = ...,
    segment_length: int = ...,
    min_overlap: float = ...,
    sample_every: int = ...,
    atol: float = ...,
    min_match: float = ...,
    neighbours: int = ...,
    max_bucket: int = ...,
    same_label_only: bool = ...,
    n_threads: int = ...,
) -> Tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.float64], Dict[str, int]]: ...
