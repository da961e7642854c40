// Text from the input (cells, file names) is printed escaped: a control character in a CSV must
// not move the cursor, ring the bell or rewrite the terminal of whoever reads our output.

// C0 controls except tab and newline, DEL, and C1 controls.
const CONTROLS = /[\u0000-\u0008\u000b-\u001f\u007f-\u009f]/g;

export function escapeControls(text: string): string {
  return text.replace(CONTROLS, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
}
