// Shows the expanded prompt on Expand Prompt nodes after they run.
import { app } from "../../scripts/app.js";
import { ComfyWidgets } from "../../scripts/widgets.js";

const NODES = new Set(["ExpandPrompt", "ExpandPromptEncode", "ExpandPromptVariations"]);

app.registerExtension({
  name: "prompt_expander.show_expanded",
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (!NODES.has(nodeData.name)) return;
    const onExecuted = nodeType.prototype.onExecuted;
    nodeType.prototype.onExecuted = function (message) {
      onExecuted?.apply(this, arguments);
      const text = (message?.text || []).join("\n\n");
      let widget = this.widgets?.find((w) => w.name === "expanded_preview");
      if (!widget) {
        widget = ComfyWidgets["STRING"](this, "expanded_preview", ["STRING", { multiline: true }], app).widget;
        widget.inputEl.readOnly = true;
        widget.inputEl.style.opacity = 0.75;
        widget.serialize = false; // display only: the saved graph gets the text via node properties
      }
      widget.value = text;
      this.setSize([this.size[0], Math.max(this.size[1], this.computeSize()[1])]);
    };
  },
});
