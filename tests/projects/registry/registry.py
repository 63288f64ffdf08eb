"""Every model the service ships: its module, class and example input."""

REGISTRY = {
    "scorer": ("models.scorer", "Scorer", (2, 6)),
    "mixer": ("models.mixer", "Mixer", (3, 4, 5)),
}
