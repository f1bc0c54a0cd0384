// CSV (RFC 4180): reading a file with a header row into records, writing records back with proper quoting.

export class CsvError extends Error {}

// Rows of cells: quoted cells may hold commas, quotes ("" inside) and line breaks; CRLF or LF ends a row.
export function parseRows(text) {
  const rows = [];
  let row = [];
  let cell = "";
  let quoted = false;
  let line = 1;
  let i = text.charCodeAt(0) === 0xfeff ? 1 : 0; // a byte order mark is not part of the first name
  const endCell = () => {
    row.push(cell);
    cell = "";
  };
  const endRow = () => {
    endCell();
    rows.push(row);
    row = [];
  };
  for (; i < text.length; i += 1) {
    const c = text[i];
    if (quoted) {
      if (c === '"' && text[i + 1] === '"') {
        cell += '"';
        i += 1;
      } else if (c === '"') {
        quoted = false;
        const next = text[i + 1];
        if (next !== undefined && next !== "," && next !== "\n" && next !== "\r") {
          throw new CsvError(`Line ${line}: a quoted value must end at a comma or the end of the line.`);
        }
      } else {
        if (c === "\n") line += 1;
        cell += c;
      }
    } else if (c === '"') {
      if (cell !== "") throw new CsvError(`Line ${line}: a quote inside an unquoted value (quote the whole value).`);
      quoted = true;
    } else if (c === ",") {
      endCell();
    } else if (c === "\n" || c === "\r") {
      if (c === "\r" && text[i + 1] === "\n") i += 1;
      endRow();
      line += 1;
    } else {
      cell += c;
    }
  }
  if (quoted) throw new CsvError(`Line ${line}: a quoted value is never closed.`);
  if (cell !== "" || row.length) endRow();
  return rows.filter((cells) => !(cells.length === 1 && cells[0] === "")); // blank lines
}

// Records from a CSV with a header row. A cell holding a JSON object or array (as this console exports
// nested values) becomes that value; an empty cell is a missing field; every other cell stays text.
export function parseCsv(text) {
  const rows = parseRows(text);
  if (rows.length === 0) throw new CsvError("The file is empty.");
  const header = rows[0].map((name) => name.trim());
  header.forEach((name, index) => {
    if (!name) throw new CsvError(`The header row's column ${index + 1} has no name.`);
    if (header.indexOf(name) !== index) throw new CsvError(`The header row names “${name}” twice.`);
  });
  if (rows.length === 1) throw new CsvError("The file has a header row but no rows to import.");
  return rows.slice(1).map((cells, index) => {
    if (cells.length > header.length) {
      throw new CsvError(`Row ${index + 2} has ${cells.length} values but the header names ${header.length} columns.`);
    }
    const record = {};
    cells.forEach((cell, column) => {
      // defineProperty: a column named __proto__ is a field like any other, not the record's prototype.
      if (cell === "") return;
      const field = { value: nested(cell), enumerable: true, writable: true, configurable: true };
      Object.defineProperty(record, header[column], field);
    });
    return record;
  });
}

function nested(cell) {
  const first = cell.trimStart()[0];
  if (first !== "{" && first !== "[") return cell;
  try {
    return JSON.parse(cell);
  } catch {
    return cell;
  }
}

// One cell, quoted when it holds a comma, a quote, a line break or edge spaces.
export function quote(text) {
  return /[",\r\n]|^\s|\s$/.test(text) ? `"${text.replaceAll('"', '""')}"` : text;
}

// A CSV document: the header row, then one row per record (cells already text), CRLF line ends.
export function writeCsv(columns, rows) {
  const lines = [columns.map(quote).join(",")];
  for (const cells of rows) lines.push(cells.map(quote).join(","));
  return `${lines.join("\r\n")}\r\n`;
}
