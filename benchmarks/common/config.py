"""segkit's config composed from conf/ as run.py composes it, and the data it names."""

from __future__ import annotations

import shutil
from pathlib import Path

from benchmarks.common import ROOT


def compose(data_dir: Path | None, cache_dir: Path | None, *overrides: str):
    """The project's config, composed as run.py does, pointed at ``data_dir``/``cache_dir``
    (left as configured when None), never downloading."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from segkit.config import register_resolvers

    register_resolvers(ROOT)
    paths = [*([f"data.root={data_dir}"] if data_dir else []),
             *([f"data.cache_dir={cache_dir}"] if cache_dir else [])]
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return hydra_compose("config", overrides=[*paths, "data.download=false", *overrides])


def prepared(data_dir: Path, cache_dir: Path, *overrides: str):
    """(config, ``segkit.data.prepare``'s arrays) for the official split of ``data_dir``."""
    from segkit.data import prepare

    cfg = compose(data_dir, cache_dir, "split=official", *overrides)
    return cfg, prepare(cfg.data, cfg.split)


def default_epochs() -> int:
    """``trainer.epochs`` of the default config (conf/trainer/default.yaml)."""
    from omegaconf import OmegaConf

    return int(OmegaConf.load(ROOT / "conf" / "trainer" / "default.yaml").epochs)


def check_dataset(data_dir: Path) -> Path:
    """``data_dir`` resolved; exits with a message when it holds no ``images/`` folder."""
    data_dir = Path(data_dir).resolve()
    if not (data_dir / "images").is_dir():
        raise SystemExit(f"error: no dataset at {data_dir} (give --data-dir)")
    return data_dir


def make_small_dataset(src: Path, dst: Path, pairs: int) -> Path:
    """``pairs`` real pairs from ``src`` with official-style lists (2/3 train, 1/3 test)."""
    names = sorted(p.stem for p in (src / "images").iterdir() if p.suffix == ".jpg")[:pairs]
    for sub in ("images", "masks"):
        (dst / sub).mkdir(parents=True, exist_ok=True)
        for n in names:
            shutil.copy(src / sub / f"{n}.jpg", dst / sub / f"{n}.jpg")
    cut = 2 * len(names) // 3
    (dst / "splits").mkdir(exist_ok=True)
    (dst / "splits" / "train.txt").write_text("\n".join(names[:cut]) + "\n")
    (dst / "splits" / "val.txt").write_text("\n".join(names[cut:]) + "\n")
    return dst
