"""Studies: a grid of cells (backbone x stem x seed), executors (local, Ray), a resumable store."""

from stemlab.study.cell import run_cell
from stemlab.study.executors import LocalExecutor, RayExecutor, make_executor
from stemlab.study.runner import StudyRun, load_study, run_study
from stemlab.study.spec import PROBES, Cell, Study, config_hash
from stemlab.study.store import CellStore
from stemlab.study.tables import build_tables, read_tables, write_tables

__all__ = [
    "PROBES",
    "Cell",
    "CellStore",
    "LocalExecutor",
    "RayExecutor",
    "Study",
    "StudyRun",
    "build_tables",
    "config_hash",
    "load_study",
    "make_executor",
    "read_tables",
    "run_cell",
    "run_study",
    "write_tables",
]
