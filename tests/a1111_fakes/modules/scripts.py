AlwaysVisible = object()


class Script:
    infotext_fields = None
    paste_field_names = None
