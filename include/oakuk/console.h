#ifndef OAKUK_CONSOLE_H
#define OAKUK_CONSOLE_H

#include <oakuk/error.h>

OAKUK_BEGIN_DECLS

/* Consoles of instances (a unikernel's serial port, a container's output) as text. Raw consoles
 * are not text: firmware and guests write terminal escape sequences (SeaBIOS clears the screen),
 * NUL bytes (arm64 guests start with some) and bytes that are not UTF-8. Everything that shows a
 * console to a person or a program (logs, status details, crash detection, `oakuk run`) reads it
 * through this module, so all of them see the same text. */

/* Cleaning rules: ECMA-48 escape sequences (CSI, OSC, DCS and the other string sequences, and
 * two-byte ESC sequences) are removed, as are C0 controls except '\n' and '\t', DEL and the C1
 * controls U+0080..U+009F; "\r\n" and a lone '\r' end a line; bytes that are not UTF-8 become
 * U+FFFD. The result is valid UTF-8 without NULs. */

/* A streaming cleaner: holds partial escape sequences, UTF-8 characters and a pending '\r'
 * between chunks. */
typedef struct oakuk_console oakuk_console;

OAKUK_API oakuk_console *oakuk_console_new(void);
OAKUK_API void oakuk_console_free(oakuk_console *console);
/* Cleans the next len bytes; returns the text they complete (possibly ""), at most 3 * len + 3
 * bytes. Free with oakuk_free. */
OAKUK_API char *oakuk_console_feed(oakuk_console *console, const char *data, size_t len);
/* Ends the stream: returns what was held back (an incomplete UTF-8 character becomes U+FFFD, an
 * incomplete escape sequence is dropped). Free with oakuk_free. */
OAKUK_API char *oakuk_console_finish(oakuk_console *console);

/* Flags of oakuk_console_tail. */
#define OAKUK_CONSOLE_SKIP_EMPTY 1u /* leave out empty and blank lines */
#define OAKUK_CONSOLE_STRIP 2u      /* strip leading and trailing white space of each line */

/* The last max_lines lines of the console file at path, read from at most its last max_bytes
 * bytes (a line cut by that window is left out), cleaned, joined by '\n' (no final newline).
 * A missing file gives OAKUK_ENOTFOUND; an empty one "". Free *text_out with oakuk_free. */
OAKUK_API int oakuk_console_tail(char **text_out, const char *path, uint32_t max_lines, uint64_t max_bytes,
                                 uint32_t flags, oakuk_error **error);

/* What a console's end says about how its guest ended (OAKUK_CONSOLE_CRASH_*). */
#define OAKUK_CONSOLE_CRASH_NONE 0
/* Unikraft's CRIT: lines, "Unhandled Trap", a failed assertion, an error of libukboot (a failed
 * boot) */
#define OAKUK_CONSOLE_CRASH_UNIKRAFT 1
/* "Kernel panic", an Oops or a BUG: line */
#define OAKUK_CONSOLE_CRASH_LINUX 2

/* Looks at the last 64 KiB of the console file at path for a crash. Returns OAKUK_CONSOLE_CRASH_*
 * (a missing file is CRASH_NONE) and, when a crash is found and line_out is non-NULL, the line
 * that best names it (the first "Kernel panic" line, else the first CRIT: line, else the first
 * crash line), cleaned; free with oakuk_free. */
OAKUK_API int32_t oakuk_console_crash(char **line_out, const char *path);
/* The same judgement for one line of clean text. */
OAKUK_API int32_t oakuk_console_line_crash(const char *line);

OAKUK_END_DECLS

#endif
