// CodeMirror 6 bound to the room's Y.Text through y-codemirror.next.
import { defaultKeymap, indentWithTab } from "@codemirror/commands";
import { javascript } from "@codemirror/lang-javascript";
import { python } from "@codemirror/lang-python";
import { bracketMatching, indentOnInput, syntaxHighlighting } from "@codemirror/language";
import { Compartment, EditorState, type Extension, type Transaction } from "@codemirror/state";
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
import { yCollab, ySyncAnnotation, yUndoManagerKeymap } from "y-codemirror.next";
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

// Read-only people (mentor, watchers) must still reach the code by keyboard: the
// content stays focusable (Tab, "Skip to editor"), arrow keys move a caret through it,
// screen readers hear "read-only", and the selection is published like anyone's.
function readOnlyExtension(readOnly: boolean, label: string): Extension {
  const attrs: Record<string, string> = { "aria-label": label };
  if (readOnly) Object.assign(attrs, { tabindex: "0", "aria-readonly": "true" });
  return [
    EditorState.readOnly.of(readOnly),
    EditorView.editable.of(!readOnly),
    EditorView.contentAttributes.of(attrs),
  ];
}

/** Refuse a local edit before it is applied: `check` gets the UTF-8 size of what it
 * inserts and answers why it cannot be shared (or null). Remote changes pass. */
function guardExtension(check: ((inserted: string) => string | null) | undefined, refused: (why: string) => void): Extension {
  if (!check) return [];
  return EditorState.transactionFilter.of((tr: Transaction) => {
    if (!tr.docChanged || tr.annotation(ySyncAnnotation) !== undefined) return tr;
    let inserted = "";
    tr.changes.iterChanges((_fa, _ta, _fb, _tb, text) => {
      inserted += text.sliceString(0);
    });
    const why = check(inserted);
    if (why === null) return tr;
    refused(why);
    return [];
  });
}

export interface EditorOptions {
  parent: HTMLElement;
  ytext: Y.Text;
  awareness: Awareness;
  language: string;
  readOnly: boolean;
  label: string;
  /** Why a local edit inserting this text cannot be shared (null: it can). */
  check?: (inserted: string) => string | null;
  refused?: (why: string) => void;
  /** More extensions (e.g. the hint gutter of chat.ts). */
  extensions?: Extension[];
}

export class CodeEditor {
  view: EditorView;
  private readonly readOnly = new Compartment();

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
        this.readOnly.of(readOnlyExtension(opts.readOnly, opts.label)),
        guardExtension(opts.check, opts.refused ?? (() => undefined)),
        yCollab(opts.ytext, opts.awareness, { undoManager }),
        ...(opts.extensions ?? []),
      ],
    });
    return new EditorView({ state, parent: opts.parent });
  }

  setReadOnly(readOnly: boolean, label: string): void {
    this.view.dispatch({
      effects: this.readOnly.reconfigure(readOnlyExtension(readOnly, label)),
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
