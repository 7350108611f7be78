class OptionInfo:
    def __init__(self, default=None, label="", component=None, component_args=None, section=None, **kw):
        self.default, self.label, self.section = default, label, section

    def info(self, text):
        return self


class Options:
    def __init__(self):
        self.data_labels = {}

    def add_option(self, key, info):
        self.data_labels[key] = info
        setattr(self, key, info.default)


opts = Options()
