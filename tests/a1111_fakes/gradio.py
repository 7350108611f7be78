"""Test stand-in for gradio: components remember their constructor arguments."""


class Component:
    def __init__(self, *args, **kwargs):
        self.args, self.kwargs = args, kwargs
        self.value = kwargs.get("value", args[0] if args else None)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


Dropdown = Slider = Checkbox = Radio = Number = Textbox = Row = Accordion = Component
