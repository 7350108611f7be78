ui_settings, infotext_pasted = [], []


def on_ui_settings(callback, *, name=None):
    ui_settings.append(callback)


def on_infotext_pasted(callback, *, name=None):
    infotext_pasted.append(callback)
