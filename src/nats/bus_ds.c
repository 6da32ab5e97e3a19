/*
 * bus_ds: the JetStream calls of the Durable Streams route (see bus.h).
 *
 * The route keeps no writer state of its own: every stream's data,
 * metadata and producer state are messages in one JetStream stream, and
 * each write is a publish conditioned on the subject's last sequence
 * (Nats-Expected-Last-Subject-Sequence), so two gateways appending to one
 * stream are serialised by nats-server, not by a lock in either of them.
 * Reads are direct gets (AllowDirect), which any replica answers, one
 * message per request: nats-server 2.9 has no batched direct get.
 *
 * Each call is synchronous with its own bound (ds-timeout-ms), made on
 * one of BUS_DS_THREADS threads: the route hands a whole protocol
 * operation to bus_ds_submit() as a job, which runs there and goes back
 * to its worker as BUS_MAIL_DS mail, so a slow JetStream (or a client
 * sending many DS requests) holds a DS thread, never a worker's loop.
 * Why whole operations on threads rather than cnats's asynchronous calls:
 * every operation is a short chain of dependent calls (read the tail, then
 * publish on it), which would otherwise become a state machine per
 * operation. Bounded: ds_max_inflight jobs queued or running per process
 * (the route answers 503 past it), and a job that waited for a thread
 * nine tenths of ds-timeout-ms or more runs with every call failing at
 * once (about as long as one call may take: in practice only a stalled
 * JetStream makes a queue that slow, whose calls time out at exactly
 * ds-timeout-ms, hence not the whole of it; a lower limit would risk
 * refusing a healthy queue on a busy machine): on a stalled
 * JetStream a deep queue would otherwise answer its last job only after
 * queue / BUS_DS_THREADS timeouts. At bus_free() the threads run what is
 * queued with every call failing at once, so shutdown waits for at most
 * the calls in progress (one ds-timeout-ms each).
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bus_int.h"
#include "sluice/err.h"
#include "sluice/log.h"
#include "sluice/mem.h"

#define BUS_DS_THREADS 4

/* One queued job. */
struct bus_ds_task {
    struct list node;
    bus_ds_run_fn *run;
    void *job;
    size_t worker;
    int64_t queued_ms; /* bus_now_ms() at bus_ds_submit() */
};

/* Set on a DS thread while it runs a job that waited 9/10 of ds-timeout-ms or more. */
static _Thread_local bool stale;

/* Whether a call must fail at once: no stream, the bus closing, or a stale job. */
static bool calls_off(struct bus *bus)
{
    return !bus->ds_js || atomic_load(&bus->closing) || stale;
}

static void *ds_thread(void *arg)
{
    struct bus *bus = arg;
    pthread_mutex_lock(&bus->ds_lock);
    for (;;) {
        while (list_empty(&bus->ds_queue) && !bus->ds_stopping)
            pthread_cond_wait(&bus->ds_wake, &bus->ds_lock);
        if (list_empty(&bus->ds_queue))
            break; /* stopping, and nothing left: every job went back to its worker */
        struct bus_ds_task *t = container_of(bus->ds_queue.next, struct bus_ds_task, node);
        list_remove(&t->node);
        pthread_mutex_unlock(&bus->ds_lock);
        stale = bus_now_ms() - t->queued_ms >= bus->ds_timeout_ms * 9 / 10;
        if (stale)
            log_debug("ds: a job waited %lld ms or more for a thread: its calls fail at once",
                      (long long)bus->ds_timeout_ms * 9 / 10);
        t->run(t->job);
        bus->p.post(bus->p.worker_ctxs[t->worker], (struct bus_mail){.kind = BUS_MAIL_DS,
                                                                     .ds_job = t->job});
        free(t);
        pthread_mutex_lock(&bus->ds_lock);
        bus->ds_inflight--;
    }
    pthread_mutex_unlock(&bus->ds_lock);
    return NULL;
}

int bus_ds_submit(struct bus *bus, size_t worker, bus_ds_run_fn *run, void *job)
{
    if (!bus->ds_threads)
        return ERR_NATS;
    pthread_mutex_lock(&bus->ds_lock);
    if (bus->ds_stopping || bus->ds_inflight >= bus->ds_max_inflight) {
        pthread_mutex_unlock(&bus->ds_lock);
        return ERR_LIMIT;
    }
    struct bus_ds_task *t = mem_calloc(1, sizeof(*t));
    t->run = run;
    t->job = job;
    t->worker = worker;
    t->queued_ms = bus_now_ms();
    list_insert_tail(&bus->ds_queue, &t->node);
    bus->ds_inflight++;
    pthread_cond_signal(&bus->ds_wake);
    pthread_mutex_unlock(&bus->ds_lock);
    return 0;
}

size_t bus_ds_jobs(struct bus *bus)
{
    if (!bus->ds_threads)
        return 0;
    pthread_mutex_lock(&bus->ds_lock);
    size_t n = bus->ds_inflight;
    pthread_mutex_unlock(&bus->ds_lock);
    return n;
}

/* Starts the DS threads. 0 or ERR_NATS. */
static int start_threads(struct bus *bus, const struct bus_params *p, char *err, size_t errlen)
{
    pthread_mutex_init(&bus->ds_lock, NULL);
    pthread_cond_init(&bus->ds_wake, NULL);
    list_init(&bus->ds_queue);
    bus->ds_max_inflight = p->ds_max_inflight ? p->ds_max_inflight : 1;
    size_t n = bus->ds_max_inflight < BUS_DS_THREADS ? bus->ds_max_inflight : BUS_DS_THREADS;
    bus->ds_threads = mem_calloc(n, sizeof(*bus->ds_threads));
    for (; bus->nds_threads < n; bus->nds_threads++) {
        if (pthread_create(&bus->ds_threads[bus->nds_threads], NULL, ds_thread, bus) != 0) {
            snprintf(err, errlen, "ds: cannot start its threads");
            return ERR_NATS;
        }
    }
    return 0;
}

int bus_ds_open(struct bus *bus, const struct bus_params *p, char *err, size_t errlen)
{
    jsOptions o;
    jsOptions_Init(&o);
    o.Wait = p->ds_timeout_ms;
    bus->ds_timeout_ms = p->ds_timeout_ms;
    bus->ds_stream = mem_strdup(p->ds_stream);
    natsStatus s = natsConnection_JetStream(&bus->ds_js, bus->nc, &o);
    if (s != NATS_OK) {
        snprintf(err, errlen, "ds-stream: no JetStream context: %s", natsStatus_GetText(s));
        return ERR_NATS;
    }
    jsErrCode jerr = 0;
    jsStreamInfo *si = NULL;
    s = js_GetStreamInfo(&si, bus->ds_js, p->ds_stream, NULL, &jerr);
    if (s == NATS_OK) {
        bool direct = si->Config->AllowDirect;
        jsStreamInfo_Destroy(si);
        if (!direct) {
            snprintf(err, errlen, "ds-stream %s exists without allow_direct: the route reads "
                     "with direct gets", p->ds_stream);
            return ERR_NATS;
        }
        return start_threads(bus, p, err, errlen);
    }
    if (s != NATS_NOT_FOUND && jerr != JSStreamNotFoundErr) {
        snprintf(err, errlen, "ds-stream %s: %s", p->ds_stream, natsStatus_GetText(s));
        return ERR_NATS;
    }
    jsStreamConfig sc;
    jsStreamConfig_Init(&sc);
    const char *subjects[1] = {p->ds_subjects};
    sc.Name = p->ds_stream;
    sc.Subjects = subjects;
    sc.SubjectsLen = 1;
    sc.Storage = js_FileStorage;
    sc.AllowDirect = true;
    s = js_AddStream(&si, bus->ds_js, &sc, NULL, &jerr);
    if (s != NATS_OK) {
        snprintf(err, errlen, "cannot make ds-stream %s on %s: %s (%d)", p->ds_stream,
                 p->ds_subjects, natsStatus_GetText(s), (int)jerr);
        return ERR_NATS;
    }
    jsStreamInfo_Destroy(si);
    log_info("ds: made JetStream stream %s on %s", p->ds_stream, p->ds_subjects);
    return start_threads(bus, p, err, errlen);
}

void bus_ds_stop(struct bus *bus)
{
    if (bus->ds_threads) {
        /* bus->closing is set: the jobs still queued fail at their first call. */
        pthread_mutex_lock(&bus->ds_lock);
        bus->ds_stopping = true;
        pthread_cond_broadcast(&bus->ds_wake);
        pthread_mutex_unlock(&bus->ds_lock);
        for (size_t i = 0; i < bus->nds_threads; i++)
            pthread_join(bus->ds_threads[i], NULL);
        free(bus->ds_threads);
        bus->ds_threads = NULL;
        pthread_cond_destroy(&bus->ds_wake);
        pthread_mutex_destroy(&bus->ds_lock);
    }
}

void bus_ds_close(struct bus *bus)
{
    bus_ds_stop(bus);
    jsCtx_Destroy(bus->ds_js);
    bus->ds_js = NULL;
    free(bus->ds_stream);
    bus->ds_stream = NULL;
}

int bus_ds_get(struct bus *bus, const char *subject, uint64_t from, bool last,
               struct bus_ds_msg *out)
{
    memset(out, 0, sizeof(*out));
    if (calls_off(bus))
        return ERR_NATS;
    jsOptions o;
    jsOptions_Init(&o);
    o.Wait = bus->ds_timeout_ms;
    jsDirectGetMsgOptions d;
    jsDirectGetMsgOptions_Init(&d);
    if (last) {
        d.LastBySubject = subject;
    } else {
        d.Sequence = from ? from : 1;
        d.NextBySubject = subject;
    }
    natsMsg *msg = NULL;
    natsStatus s = js_DirectGetMsg(&msg, bus->ds_js, bus->ds_stream, &o, &d);
    if (s == NATS_NOT_FOUND)
        return ERR_NOTFOUND;
    if (s != NATS_OK) {
        log_warn("ds: direct get on %s failed: %s", subject, natsStatus_GetText(s));
        return ERR_NATS;
    }
    const char *v = NULL;
    if (natsMsgHeader_Get(msg, "Nats-Sequence", &v) == NATS_OK && v)
        out->seq = strtoull(v, NULL, 10);
    out->time_ns = natsMsg_GetTime(msg);
    out->data = natsMsg_GetData(msg);
    out->len = (size_t)natsMsg_GetDataLength(msg);
    out->handle = msg;
    if (!out->seq) {
        bus_ds_msg_dispose(out);
        return ERR_NATS;
    }
    return 0;
}

const char *bus_ds_header(const struct bus_ds_msg *m, const char *name)
{
    const char *v = NULL;
    if (!m->handle || natsMsgHeader_Get(m->handle, name, &v) != NATS_OK)
        return NULL;
    return v;
}

void bus_ds_msg_dispose(struct bus_ds_msg *m)
{
    natsMsg_Destroy(m->handle);
    memset(m, 0, sizeof(*m));
}

int bus_ds_publish(struct bus *bus, const char *subject, const char *const *headers,
                   size_t nheaders, const void *data, size_t len, int64_t expect_last,
                   const char *msg_id, uint64_t *seq, bool *duplicate)
{
    *duplicate = false;
    if (calls_off(bus))
        return ERR_NATS;
    natsMsg *msg = NULL;
    natsStatus s = natsMsg_Create(&msg, subject, NULL, data, (int)len);
    /* An empty value is left out: cnats 3.4 reads the next header line as its value. */
    for (size_t i = 0; s == NATS_OK && i + 1 < 2 * nheaders; i += 2) {
        if (headers[i + 1] && *headers[i + 1])
            s = natsMsgHeader_Add(msg, headers[i], headers[i + 1]);
    }
    jsPubOptions po;
    jsPubOptions_Init(&po);
    po.MaxWait = bus->ds_timeout_ms;
    po.MsgId = msg_id;
    if (expect_last == 0)
        po.ExpectNoMessage = true;
    else if (expect_last > 0)
        po.ExpectLastSubjectSeq = (uint64_t)expect_last;
    jsPubAck *pa = NULL;
    jsErrCode jerr = 0;
    if (s == NATS_OK)
        s = js_PublishMsg(&pa, bus->ds_js, msg, &po, &jerr);
    natsMsg_Destroy(msg);
    if (s != NATS_OK) {
        if (jerr == JSStreamWrongLastSequenceErr)
            return ERR_AGAIN;
        log_warn("ds: publish to %s failed: %s (%d)", subject, natsStatus_GetText(s), (int)jerr);
        return ERR_NATS;
    }
    *seq = pa->Sequence;
    *duplicate = pa->Duplicate;
    jsPubAck_Destroy(pa);
    return 0;
}

int bus_ds_purge(struct bus *bus, const char *subject, uint64_t keep)
{
    if (calls_off(bus))
        return ERR_NATS;
    jsOptions o;
    jsOptions_Init(&o);
    o.Wait = bus->ds_timeout_ms;
    o.Stream.Purge.Subject = subject;
    o.Stream.Purge.Keep = keep;
    jsErrCode jerr = 0;
    natsStatus s = js_PurgeStream(bus->ds_js, bus->ds_stream, &o, &jerr);
    if (s != NATS_OK) {
        log_warn("ds: purge of %s failed: %s (%d)", subject, natsStatus_GetText(s), (int)jerr);
        return ERR_NATS;
    }
    return 0;
}

size_t bus_ds_max_payload(struct bus *bus)
{
    int64_t n = bus->nc ? natsConnection_GetMaxPayload(bus->nc) : 0;
    return n > 0 ? (size_t)n : 0;
}
