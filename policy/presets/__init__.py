"""Shipped policy presets (lockdown, controlled, open); load with `policy.load_preset(name)`."""
