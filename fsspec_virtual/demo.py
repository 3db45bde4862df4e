"""A small sample collection, written with h5py as NetCDF4-style files (dimension scales)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["write_sample_collection"]

VARIABLES = {"t2m": ("K", 273.0), "u10": ("m s-1", 0.0), "v10": ("m s-1", 0.0)}


def write_sample_collection(
    directory: str | Path, days: int = 4, ny: int = 90, nx: int = 180
) -> list[Path]:
    """Write ``days`` daily files of hourly data into ``directory``.

    Each file holds ``time`` (CF, hours since the first day), ``lat``, ``lon`` and three
    float32 variables, chunked ``(6, ny/2, nx/2)`` with gzip and shuffle.

    Returns
    -------
    list of Path
        The files written, in time order.
    """
    import h5py

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(42)
    lat = np.linspace(-89.0, 89.0, ny)
    lon = np.linspace(0.0, 358.0, nx)
    paths = []
    for day in range(days):
        path = directory / f"sample_{day + 1:03d}.nc"
        with h5py.File(path, "w") as f:
            f.attrs["title"] = "fsspec-virtual sample collection"
            f.attrs["Conventions"] = "CF-1.8"
            time = f.create_dataset("time", data=np.arange(24, dtype="i8") + 24 * day)
            time.attrs["units"] = "hours since 2001-01-01 00:00:00"
            time.attrs["calendar"] = "standard"
            f.create_dataset("lat", data=lat).attrs["units"] = "degrees_north"
            f.create_dataset("lon", data=lon).attrs["units"] = "degrees_east"
            for name in ("time", "lat", "lon"):
                f[name].make_scale(name)
            for name, (units, base) in VARIABLES.items():
                data = base + rng.standard_normal((24, ny, nx)).astype("f4") * 5
                var = f.create_dataset(
                    name,
                    data=data,
                    chunks=(6, ny // 2, nx // 2),
                    compression="gzip",
                    shuffle=True,
                )
                var.attrs["units"] = units
                for axis, dim in enumerate(("time", "lat", "lon")):
                    var.dims[axis].attach_scale(f[dim])
        paths.append(path)
    return paths
