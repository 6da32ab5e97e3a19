/* json: JSON string escaping (see json.h). */
#include "sluice/json.h"

#include <stdint.h>
#include <stdio.h>

/* Length of the valid UTF-8 sequence at p (n bytes left), or 0. */
static size_t utf8_len(const unsigned char *p, size_t n)
{
    size_t len;
    uint32_t cp;
    if (p[0] < 0x80)
        return 1;
    if ((p[0] & 0xe0) == 0xc0) {
        len = 2;
        cp = p[0] & 0x1f;
    } else if ((p[0] & 0xf0) == 0xe0) {
        len = 3;
        cp = p[0] & 0x0f;
    } else if ((p[0] & 0xf8) == 0xf0) {
        len = 4;
        cp = p[0] & 0x07;
    } else {
        return 0;
    }
    if (len > n)
        return 0;
    for (size_t i = 1; i < len; i++) {
        if ((p[i] & 0xc0) != 0x80)
            return 0;
        cp = cp << 6 | (p[i] & 0x3f);
    }
    /* Overlong forms, surrogates and values past U+10FFFF are not UTF-8. */
    static const uint32_t min[] = {0, 0, 0x80, 0x800, 0x10000};
    if (cp < min[len] || (cp >= 0xd800 && cp <= 0xdfff) || cp > 0x10ffff)
        return 0;
    return len;
}

void json_put_string(struct buf *out, const char *s, size_t len)
{
    const unsigned char *p = (const unsigned char *)s;
    buf_append(out, "\"", 1);
    for (size_t i = 0; i < len;) {
        unsigned char c = p[i];
        if (c == '"' || c == '\\') {
            char e[2] = {'\\', (char)c};
            buf_append(out, e, 2);
            i++;
        } else if (c < 0x20 || c == 0x7f) {
            char e[8];
            snprintf(e, sizeof(e), "\\u%04x", c);
            buf_append(out, e, 6);
            i++;
        } else {
            size_t n = utf8_len(p + i, len - i);
            if (n == 0) {
                buf_append(out, "\xef\xbf\xbd", 3);
                i++;
            } else {
                buf_append(out, p + i, n);
                i += n;
            }
        }
    }
    buf_append(out, "\"", 1);
}
