"""Every model the service ships: its module, class and example input."""

REGISTRY = {
    "scorer": ("models.scorer", "Scorer", (2, 6)),
    "mixer": ("models.mixer", "Mixer", (3, 4, 5)),
    "denoiser": ("models.denoiser", "Denoiser", (1, 3, 24, 24)),
    "spectral": ("models.audio.spectral", "Spectral", (2, 32)),
}
