"""Write the benchmark collections: climate-like NetCDF4 files, one per day.

Each file holds ``time`` (unlimited, CF ``days since 2000-01-01``, standard calendar), ``lat``,
``lon`` and four float32 variables (``t2m``, ``u10``, ``v10``, ``sst``), HDF5-chunked with
zlib (level 4) and shuffle, ``_FillValue = 1e20``. ``sst`` is masked over "land" (about 30% of
the grid holds the fill value), so readers that mask wrongly show up. Values are smooth fields
plus noise, rounded to 0.01, so they compress roughly as real reanalysis fields do.

The collection is written once into its directory, with a ``collection.json`` describing it;
a later run with the same parameters reuses it.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from multiprocessing import get_context
from pathlib import Path

__all__ = ["Preset", "PRESETS", "ensure_collection"]

VARIABLES = ("t2m", "u10", "v10", "sst")
FILL_VALUE = 1.0e20
TIME_UNITS = "days since 2000-01-01 00:00:00"
FORMAT_VERSION = 1  # bump when the files written change


@dataclass(frozen=True)
class Preset:
    """One benchmark collection and how hard to measure it."""

    name: str
    days: int  # files
    steps: int  # time steps per file
    ny: int
    nx: int
    chunks: tuple[int, int, int]  # (time, lat, lon) HDF5 chunk shape
    variables: tuple[str, ...]
    repeats: int  # default repeats of each figure
    timeout: float  # seconds allowed to one measuring subprocess

    @property
    def files_per_var_chunks(self) -> int:
        ct, cy, cx = self.chunks
        return -(-self.steps // ct) * -(-self.ny // cy) * -(-self.nx // cx)

    @property
    def n_chunks(self) -> int:
        """Chunks of the data variables in the whole collection."""
        return self.days * self.files_per_var_chunks * len(self.variables)

    @property
    def var_nbytes(self) -> int:
        """Decoded bytes of one whole variable."""
        return self.days * self.steps * self.ny * self.nx * 4


PRESETS = {
    p.name: p
    for p in (
        Preset("small", 30, 4, 90, 180, (1, 90, 180), VARIABLES, 3, 300),
        Preset("medium", 365, 4, 180, 360, (1, 180, 360), VARIABLES, 3, 900),
        Preset("many-chunks", 365, 2, 180, 360, (1, 30, 30), (*VARIABLES, "msl"), 1, 3600),
        # eight years of small daily files, one chunk per field: per-file costs dominate
        Preset("many-files", 2920, 1, 90, 180, (1, 90, 180), VARIABLES, 1, 3600),
        # an archive's scale: ten thousand tiny files
        Preset("archive", 10000, 1, 32, 64, (1, 32, 64), VARIABLES, 1, 7200),
    )
}


def _fields(preset: Preset, day: int):
    import numpy as np

    rng = np.random.default_rng(1000 + day)
    lat = np.linspace(-89.5, 89.5, preset.ny)
    lon = np.linspace(0.0, 360.0, preset.nx, endpoint=False)
    la = np.deg2rad(lat)[:, None]
    lo = np.deg2rad(lon)[None, :]
    land = (np.sin(3 * lo) * np.cos(2 * la) + 0.3 * np.sin(5 * la)) > 0.35
    out = {}
    for step in range(preset.steps):
        phase = 2 * np.pi * (day + step / preset.steps) / 365.0
        hour = 2 * np.pi * step / preset.steps
        base = {
            "t2m": 288.0
            - 40.0 * np.sin(la) ** 2
            + 8.0 * np.sin(lo + hour) * np.cos(la)
            + 10.0 * np.sin(la) * np.cos(phase),
            "u10": 8.0 * np.cos(3 * la) + 3.0 * np.sin(2 * lo + phase),
            "v10": 4.0 * np.sin(2 * la) * np.cos(3 * lo - phase),
            "sst": 300.0 - 28.0 * np.sin(la) ** 2 + 1.5 * np.cos(lo + phase),
            "msl": 101325.0 + 1500.0 * np.sin(2 * la + phase) * np.cos(2 * lo),
        }
        scale = {"t2m": 1.5, "u10": 2.0, "v10": 2.0, "sst": 0.3, "msl": 150.0}
        for name in preset.variables:
            noise = rng.standard_normal((preset.ny, preset.nx)) * scale[name]
            field = np.round(np.broadcast_to(base[name], noise.shape) + noise, 2)
            if name == "sst":
                field = np.where(land, FILL_VALUE, field)
            out.setdefault(name, []).append(field.astype("f4"))
    return lat, lon, {k: np.stack(v) for k, v in out.items()}


UNITS = {"t2m": "K", "u10": "m s-1", "v10": "m s-1", "sst": "K", "msl": "Pa"}
LONG = {
    "t2m": "2 metre temperature",
    "u10": "10 metre U wind component",
    "v10": "10 metre V wind component",
    "sst": "Sea surface temperature",
    "msl": "Mean sea level pressure",
}


def _write_one(args: tuple[Preset, int, str]) -> str:
    import netCDF4
    import numpy as np

    preset, day, path = args
    lat, lon, fields = _fields(preset, day)
    tmp = path + ".tmp"
    with netCDF4.Dataset(tmp, "w", format="NETCDF4") as nc:
        nc.Conventions = "CF-1.8"
        nc.title = f"fsspec-virtual benchmark collection ({preset.name})"
        nc.source = "synthetic: smooth fields plus noise, rounded to 0.01"
        nc.createDimension("time", None)
        nc.createDimension("lat", preset.ny)
        nc.createDimension("lon", preset.nx)
        t = nc.createVariable("time", "f8", ("time",))
        t.units = TIME_UNITS
        t.calendar = "standard"
        t.standard_name = "time"
        t.axis = "T"
        t[:] = day + np.arange(preset.steps) / preset.steps
        y = nc.createVariable("lat", "f8", ("lat",))
        y.units, y.standard_name, y.axis = "degrees_north", "latitude", "Y"
        y[:] = lat
        x = nc.createVariable("lon", "f8", ("lon",))
        x.units, x.standard_name, x.axis = "degrees_east", "longitude", "X"
        x[:] = lon
        for name in preset.variables:
            v = nc.createVariable(
                name,
                "f4",
                ("time", "lat", "lon"),
                zlib=True,
                complevel=4,
                shuffle=True,
                chunksizes=preset.chunks,
                fill_value=np.float32(FILL_VALUE),
            )
            v.set_auto_maskandscale(False)
            v.units = UNITS[name]
            v.long_name = LONG[name]
            v[:] = fields[name]
    os.replace(tmp, path)
    return path


def ensure_collection(preset: Preset, directory: Path, log=print) -> list[Path]:
    """The collection's files, written first if ``directory`` does not hold them yet."""
    directory.mkdir(parents=True, exist_ok=True)
    marker = directory / "collection.json"
    description = {"format_version": FORMAT_VERSION, **asdict(preset)}
    description.pop("repeats")
    description.pop("timeout")
    paths = [directory / f"{preset.name}_{day + 1:04d}.nc" for day in range(preset.days)]
    if marker.exists():
        try:
            same = json.loads(marker.read_text()) == json.loads(json.dumps(description))
        except ValueError:
            same = False
        if same and all(p.exists() for p in paths):
            return paths
    log(f"writing {preset.days} files into {directory} ...")
    marker.unlink(missing_ok=True)
    for stale in directory.glob("*.nc"):
        stale.unlink()
    jobs = [(preset, day, str(p)) for day, p in enumerate(paths)]
    with get_context("spawn").Pool(os.cpu_count() or 1) as pool:
        for _ in pool.imap_unordered(_write_one, jobs, chunksize=4):
            pass
    marker.write_text(json.dumps(description, indent=1))
    return paths
