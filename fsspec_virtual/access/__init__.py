"""Source access: file versions and one checked adapter per protocol family."""

from .adapters import Read, SourceAdapter, adapter_for, described_error
from .version import FileVersion

__all__ = ["FileVersion", "Read", "SourceAdapter", "adapter_for", "described_error"]
