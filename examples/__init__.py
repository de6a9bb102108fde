"""Worked examples of eskit. They ship with a source checkout, not with the package."""
