import gradio as gr


class InputAccordion(gr.Component):
    pass
