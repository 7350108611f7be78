"""Test stand-in for comfy.utils.ProgressBar."""
updates = []


class ProgressBar:
    def __init__(self, total, node_id=None):
        self.total = total

    def update_absolute(self, value, total=None, preview=None):
        updates.append((value, total or self.total))

    def update(self, value):
        updates.append((value, self.total))
