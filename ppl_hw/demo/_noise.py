"""The demo's device-noise section: every generator fitted by ``EmpiricalNoise``."""

from __future__ import annotations

from .. import devices
from ..core import noise_table as nt
from ._common import DemoConfig, NoiseRow

__all__ = ["GENERATORS", "noise_rows"]

GENERATORS = {
    "gaussian_noise": devices.gaussian_noise,
    "uniform_noise": devices.uniform_noise,
    "mtj_noise": devices.mtj_noise,
    "pcm_read_noise": devices.pcm_read_noise,
}


def _empirical_noise(backend: str):
    if backend == "numpyro":
        from ..numpyro.distributions import EmpiricalNoise
    else:
        from ..pyro.distributions import EmpiricalNoise
    return EmpiricalNoise


def noise_rows(cfg: DemoConfig) -> list[NoiseRow]:
    """Fit each generator's samples with ``EmpiricalNoise`` (of the first backend
    run; both build the same table) and report the fitted density's exact
    standardised moments and entropy."""
    empirical_noise = _empirical_noise(cfg.backends[0])
    rows = []
    for name, gen in GENERATORS.items():
        table = empirical_noise(gen(cfg.noise_samples, seed=cfg.seed)).table
        m1, m2, m3, m4 = nt.table_moments(table)
        rows.append(
            NoiseRow(
                generator=name,
                num_samples=table.num_samples,
                bandwidth=table.bandwidth,
                mean=m1,
                variance=m2,
                skewness=m3,
                kurtosis=m4,
                entropy=table.entropy,
            )
        )
    return rows
