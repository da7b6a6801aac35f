// CodeMirror 6 bound to the room's Y.Text through y-codemirror.next.
import { defaultKeymap, indentWithTab } from "@codemirror/commands";
import { javascript } from "@codemirror/lang-javascript";
import { python } from "@codemirror/lang-python";
import { bracketMatching, indentOnInput, syntaxHighlighting } from "@codemirror/language";
import { Compartment, EditorState, type Extension } from "@codemirror/state";
import {
  drawSelection,
  EditorView,
  highlightActiveLine,
  highlightActiveLineGutter,
  highlightSpecialChars,
  keymap,
  lineNumbers,
} from "@codemirror/view";
import { classHighlighter } from "@lezer/highlight";
import { yCollab, yUndoManagerKeymap } from "y-codemirror.next";
import type { Awareness } from "y-protocols/awareness";
import * as Y from "yjs";

export function languageExtension(language: string): Extension {
  switch (language.toLowerCase()) {
    case "javascript":
    case "js":
      return javascript();
    case "typescript":
    case "ts":
      return javascript({ typescript: true });
    case "python":
    case "py":
      return python();
    default:
      return [];
  }
}

function readOnlyExtension(readOnly: boolean): Extension {
  return [EditorState.readOnly.of(readOnly), EditorView.editable.of(!readOnly)];
}

export interface EditorOptions {
  parent: HTMLElement;
  ytext: Y.Text;
  awareness: Awareness;
  language: string;
  readOnly: boolean;
  label: string;
  /** More extensions (e.g. the hint gutter of chat.ts). */
  extensions?: Extension[];
}

export class CodeEditor {
  view: EditorView;
  private readonly readOnly = new Compartment();
  private readonly a11y = new Compartment();

  constructor(opts: EditorOptions) {
    this.view = this.build(opts);
  }

  private build(opts: EditorOptions): EditorView {
    const undoManager = new Y.UndoManager(opts.ytext);
    const state = EditorState.create({
      doc: opts.ytext.toString(),
      extensions: [
        lineNumbers(),
        highlightActiveLineGutter(),
        highlightSpecialChars(),
        drawSelection(),
        indentOnInput(),
        bracketMatching(),
        highlightActiveLine(),
        syntaxHighlighting(classHighlighter),
        // Tab indents; Esc then Tab leaves the editor (CodeMirror's focus escape).
        keymap.of([...yUndoManagerKeymap, ...defaultKeymap, indentWithTab]),
        languageExtension(opts.language),
        this.readOnly.of(readOnlyExtension(opts.readOnly)),
        this.a11y.of(EditorView.contentAttributes.of({ "aria-label": opts.label })),
        yCollab(opts.ytext, opts.awareness, { undoManager }),
        ...(opts.extensions ?? []),
      ],
    });
    return new EditorView({ state, parent: opts.parent });
  }

  setReadOnly(readOnly: boolean, label: string): void {
    this.view.dispatch({
      effects: [
        this.readOnly.reconfigure(readOnlyExtension(readOnly)),
        this.a11y.reconfigure(EditorView.contentAttributes.of({ "aria-label": label })),
      ],
    });
  }

  /** A new session brought a new Y.Doc: start a fresh view on it. */
  rebind(opts: EditorOptions): void {
    const hadFocus = this.view.hasFocus;
    this.view.destroy();
    this.view = this.build(opts);
    if (hadFocus) this.view.focus();
  }

  destroy(): void {
    this.view.destroy();
  }
}
