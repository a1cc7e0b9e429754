/* SPDX-License-Identifier: MIT */
/* Splits a QMP byte stream into top-level JSON values, as QEMU's JSON
 * streamer does: brace/bracket depth and strings are tracked byte by
 * byte, and each complete value is handed on as text.  Lexical errors
 * QEMU reports itself (stray characters, invalid keywords, nesting and
 * size limits) are found here; the rest is json-glib's job.
 *
 * After an error the rest of the broken value is skipped (up to where
 * its depth returns to zero) so that the next request is read cleanly.
 * A 0xFF byte or an ASCII control character other than tab, CR and LF
 * resets the stream at once, wherever it is (the QMP specification's
 * "Forcing the JSON parser into known-good state").
 */
#include <errno.h>
#include <string.h>
#include "control/json-stream.h"

#define MAX_NESTING 1024

struct BdJsonStream {
    gsize max_size;
    BdJsonStreamFunc fn;
    gpointer opaque;

    GString *buf;       /* the value being collected */
    int depth;          /* open braces + brackets */
    char quote;         /* 0, '"' or '\'' while inside a string */
    gboolean escape;    /* the previous byte was a backslash */
    gboolean skipping;  /* dropping the rest of a broken value */
    gsize string_start; /* where in buf the open string's quote is */
    GString *word;      /* a bare word (keyword or number) being read */
    char *error;        /* first lexical error of this value */
};

BdJsonStream *bd_json_stream_new(gsize max_size, BdJsonStreamFunc fn,
                                 gpointer opaque)
{
    BdJsonStream *s = g_new0(BdJsonStream, 1);

    s->max_size = max_size;
    s->fn = fn;
    s->opaque = opaque;
    s->buf = g_string_new(NULL);
    s->word = g_string_new(NULL);
    return s;
}

void bd_json_stream_free(BdJsonStream *s)
{
    if (s) {
        g_string_free(s->buf, TRUE);
        g_string_free(s->word, TRUE);
        g_free(s->error);
        g_free(s);
    }
}

static void reset(BdJsonStream *s)
{
    g_string_truncate(s->buf, 0);
    g_string_truncate(s->word, 0);
    s->depth = 0;
    s->quote = 0;
    s->escape = FALSE;
    g_clear_pointer(&s->error, g_free);
}

static void set_error(BdJsonStream *s, char *msg)
{
    if (!s->error) {
        s->error = msg;
    } else {
        g_free(msg);
    }
}

/* Emit the collected value (or its error) and start afresh. */
static void emit(BdJsonStream *s)
{
    g_autofree char *err = g_steal_pointer(&s->error);
    g_autoptr(GString) text = g_steal_pointer(&s->buf);

    s->buf = g_string_new(NULL);
    reset(s);
    s->fn(text->str, text->len, err, s->opaque);
}

/* Report an error at once and skip the rest of the current value. */
static void fail_now(BdJsonStream *s, const char *msg)
{
    gboolean inside = s->depth > 0 || s->quote;

    g_clear_pointer(&s->error, g_free);
    s->fn(NULL, 0, msg, s->opaque);
    int depth = s->depth;
    char quote = s->quote;
    reset(s);
    if (inside) {
        s->skipping = TRUE;
        s->depth = depth;
        s->quote = quote;
    }
}

/* A bare word ended: check it is a keyword or a number. */
static void end_word(BdJsonStream *s)
{
    const char *w = s->word->str;

    if (!s->word->len) {
        return;
    }
    if (g_ascii_isalpha(w[0]) && strcmp(w, "true") && strcmp(w, "false") &&
        strcmp(w, "null")) {
        set_error(s, g_strdup_printf("JSON parse error, invalid keyword '%s'",
                                     w));
    } else if (w[0] == '-' && !strpbrk(w, ".eE")) {
        /* QEMU reads integers beyond 64 bits as floating point numbers;
         * json-glib would wrap them, so mark them as such.  Positive ones
         * are bd_json_parse()'s, which tells UINT64_MAX from 2^64. */
        char *end;
        errno = 0;
        g_ascii_strtoll(w, &end, 10);
        if (errno == ERANGE && !*end && s->buf->len >= s->word->len) {
            g_string_append(s->buf, ".0");
        }
    }
    g_string_truncate(s->word, 0);
}

static gboolean is_word_char(char c)
{
    return g_ascii_isalnum(c) || c == '-' || c == '+' || c == '.' ||
           c == '_';
}

/* One byte outside strings. */
static void lex(BdJsonStream *s, char c)
{
    if (is_word_char(c)) {
        g_string_append_c(s->word, c);
        g_string_append_c(s->buf, c);
        return;
    }
    end_word(s);
    if (s->depth == 0 && s->buf->len) {
        /* A top-level scalar ended with this byte. */
        emit(s);
    }
    switch (c) {
    case '{':
    case '[':
        if (++s->depth > MAX_NESTING) {
            fail_now(s, "JSON nesting depth limit exceeded");
            return;
        }
        g_string_append_c(s->buf, c);
        return;
    case '}':
    case ']':
        if (s->depth == 0) {
            s->fn(NULL, 0, "JSON parse error, expecting value", s->opaque);
            return;
        }
        g_string_append_c(s->buf, c);
        if (--s->depth == 0) {
            emit(s);
        }
        return;
    case '"':
    case '\'':
        s->quote = c;
        s->string_start = s->buf->len;
        g_string_append_c(s->buf, c);
        return;
    case ' ': case '\t': case '\n': case '\r':
        if (s->buf->len) {
            g_string_append_c(s->buf, c);
        }
        return;
    case ':': case ',':
        g_string_append_c(s->buf, c);
        return;
    default: {
        /* QEMU shows the byte itself (JSON-escaped in the reply). */
        g_autofree char *m = NULL;
        if ((guchar)c >= 0x80) {
            m = g_strdup_printf("JSON parse error, stray '\\x%02x'",
                                (guchar)c);
        } else {
            m = g_strdup_printf("JSON parse error, stray '%c'", c);
        }
        if (s->depth == 0) {
            s->fn(NULL, 0, m, s->opaque);
        } else {
            set_error(s, g_steal_pointer(&m));
            g_string_append_c(s->buf, c);
        }
        return;
    }
    }
}

/* Track strings and depth while skipping a broken value. */
static void skip(BdJsonStream *s, char c)
{
    if (s->quote) {
        if (s->escape) {
            s->escape = FALSE;
        } else if (c == '\\') {
            s->escape = TRUE;
        } else if (c == s->quote) {
            s->quote = 0;
        }
        return;
    }
    if (c == '"' || c == '\'') {
        s->quote = c;
    } else if (c == '{' || c == '[') {
        s->depth++;
    } else if ((c == '}' || c == ']') && --s->depth <= 0) {
        s->skipping = FALSE;
        reset(s);
    }
}

/* A byte that forces the parser into a known-good state. */
static gboolean is_reset_byte(char c)
{
    guchar u = (guchar)c;

    return u == 0xFF || (u < 0x20 && c != '\t' && c != '\r' && c != '\n');
}

/* QEMU's lexer reports the token the byte ended (a string so far
 * included, 0xFF shown as U+FFFD), and whatever was pending is
 * dropped. */
static void resync(BdJsonStream *s, char c)
{
    g_autoptr(GString) tok = g_string_new(NULL);
    g_autofree char *msg = NULL;

    if (s->quote && !s->skipping && s->string_start < s->buf->len) {
        g_string_append(tok, s->buf->str + s->string_start);
    }
    if ((guchar)c == 0xFF) {
        g_string_append(tok, "\xEF\xBF\xBD");
    } else {
        g_string_append_c(tok, c);
    }
    g_autofree char *valid = g_utf8_make_valid(tok->str, (gssize)tok->len);
    msg = g_strdup_printf("JSON parse error, stray '%s'", valid);
    reset(s);
    s->skipping = FALSE;
    s->fn(NULL, 0, msg, s->opaque);
}

void bd_json_stream_feed(BdJsonStream *s, const char *data, gsize len)
{
    for (gsize i = 0; i < len; i++) {
        char c = data[i];

        if (is_reset_byte(c)) {
            resync(s, c);
            continue;
        }
        if (s->skipping) {
            skip(s, c);
            continue;
        }
        if (s->quote) {
            g_string_append_c(s->buf, c);
            if (s->escape) {
                s->escape = FALSE;
                if (!strchr("\"'\\/bfnrtu", c) || c == 0) {
                    set_error(s, g_strdup("JSON parse error, invalid escape "
                                          "sequence in string"));
                }
            } else if (c == '\\') {
                s->escape = TRUE;
            } else if (c == s->quote) {
                s->quote = 0;
                if (s->depth == 0) {
                    emit(s);            /* a top-level string */
                }
            }
        } else {
            lex(s, c);
        }
        if (s->buf->len > s->max_size) {
            fail_now(s, "JSON token size limit exceeded");
        }
    }
}
