/*
 * libFuzzer target: the HTTP/2 server session fed raw bytes in memory, as
 * nghttp2's own tests do. A real session (our callbacks, our limits, the
 * stream module behind it, no NATS) gets the client preface followed by
 * the input, in pieces whose sizes the input's first byte picks; after
 * each piece the output is drained the way a connection would. Properties:
 * no crash or leak, and the output buffer never grows past one frame over
 * its bound.
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "sluice/buf.h"
#include "sluice/config.h"
#include "sluice/fanout.h"
#include "sluice/filecache.h"
#include "sluice/h2_conn.h"
#include "sluice/request.h"
#include "sluice/stream.h"

#define OUT_MAX 4096

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void on_dirty(void *ctx) { (void)ctx; }

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char preface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    struct config cfg;
    config_init(&cfg);
    cfg.max_streams = 100;
    struct fanout *fanout =
        fanout_new(NULL, 0, stream_on_event, stream_on_ready, stream_on_replayed);
    struct stream_env streams;
    stream_env_init(&streams, fanout, cfg.heartbeat_ms, 1 << 20);
    struct request_stats stats;
    memset(&stats, 0, sizeof(stats));
    struct filecache *files = filecache_new(cfg.file_cache_bytes);
    struct request_env env = {.cfg = &cfg, .streams = &streams, .stats = &stats, .files = files};
    struct buf out;
    buf_init(&out);
    struct front_io io = {&env, &out, OUT_MAX, on_dirty, NULL, 1, "127.0.0.1:1", true,
                               "127.0.0.1", NULL, false};
    const struct front_ops *ops = &h2_front_ops;
    void *h2 = ops->new(&io);

    size_t piece = size ? (data[0] % 64) + 1 : 1;
    int rc = ops->recv(h2, (const uint8_t *)preface, sizeof(preface) - 1);
    for (size_t off = size ? 1 : 0; rc == 0 && off < size; off += piece) {
        size_t n = size - off < piece ? size - off : piece;
        rc = ops->recv(h2, data + off, n);
        for (int i = 0; rc == 0 && i < 8; i++) {
            rc = ops->fill(h2);
            if (out.len > OUT_MAX + 16384 + 9)
                __builtin_trap();
            buf_consume(&out, buf_pending(&out)); /* the socket took it all */
        }
        /* Time passes: heartbeats and expiries run as the worker would run them. */
        stream_env_tick(&streams, stream_now_ms() + 60000);
    }
    ops->free(h2);
    filecache_free(files);
    buf_dispose(&out);
    fanout_free(fanout);
    config_dispose(&cfg);
    return 0;
}
