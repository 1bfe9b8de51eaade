"""Where the checkout and the shared Kvasir-SEG copy are."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SHARED_KVASIR = ROOT.parent / "shared" / "data" / "kvasir-seg"
