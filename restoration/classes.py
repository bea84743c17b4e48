"""Damage classes, their ids and preview colours (the paper's convention: green splits,
red craquelure, blue losses, pink small defects)."""
CLASS_IDS = {"support_split": 1, "craquelure": 2, "loss": 3, "small_defect": 4, "user": 5}
CLASS_NAMES = {v: k for k, v in CLASS_IDS.items()}
CLASS_COLORS = {1: (0.1, 0.85, 0.2), 2: (0.95, 0.1, 0.1), 3: (0.15, 0.35, 1.0), 4: (1.0, 0.4, 0.8),
                5: (1.0, 0.85, 0.0)}
DEFAULT_FILL_CLASSES = ("loss", "small_defect", "user")
