// Shows the expanded prompt on Expand Prompt nodes after they run.
// Only app.js and the node's own addDOMWidget: scripts/widgets.js is internal to the frontend, which warns
// that importing it may break.
import { app } from "../../scripts/app.js";

const NODES = new Set(["ExpandPrompt", "ExpandPromptEncode", "ExpandPromptVariations"]);
const PREVIEW = "expanded_preview";

function previewWidget(node) {
  const existing = node.widgets?.find((w) => w.name === PREVIEW);
  if (existing) return existing;
  const area = document.createElement("textarea");
  area.readOnly = true;
  area.spellcheck = false;
  Object.assign(area.style, { opacity: 0.75, width: "100%", height: "100%", resize: "none", boxSizing: "border-box" });
  const widget = node.addDOMWidget(PREVIEW, "prompt_expander_preview", area, {
    getValue: () => area.value,
    setValue: (v) => { area.value = v; },
    getMinHeight: () => 80,
  });
  // Display only: a saved workflow's widget values stay what the node's inputs are (frontend 1.35 reads this
  // flag on the widget, not in the options); the saved graph gets the text via node properties.
  widget.serialize = false;
  return widget;
}

app.registerExtension({
  name: "prompt_expander.show_expanded",
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (!NODES.has(nodeData.name)) return;
    const onExecuted = nodeType.prototype.onExecuted;
    nodeType.prototype.onExecuted = function (message) {
      onExecuted?.apply(this, arguments);
      const widget = previewWidget(this);
      widget.value = (message?.text || []).join("\n\n");
      this.setSize([this.size[0], Math.max(this.size[1], this.computeSize()[1])]);
      app.graph.setDirtyCanvas(true, false);
    };
  },
});
