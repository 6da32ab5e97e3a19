/*
 * sluice-llm: the reference service behind sluice's request routes. It
 * answers OpenAI-style chat-completion requests by streaming tokens, at a
 * fixed rate, in the chat.completion.chunk format, so that the gateway, the
 * demo, the tests and the bench have a real NATS service to talk to.
 *
 *   sluice-llm [--nats URL] [--subject S] [--queue Q] [--rate TOKENS_PER_S]
 *              [--tokens N] [--max-tokens N] [--max-answers N]
 *              [--max-body BYTES] [--text lorem|echo] [--model NAME] [--stamp]
 *
 * The contract with sluice (README: the request routes, and "The reference
 * LLM service"): a request arrives on
 * the service subject (queue group Q, so several copies share the load)
 * with its reply subject naming the stream, and the headers Sse-Stream-Id
 * and Sse-Cancel. The answer is one NATS message per SSE event on the reply
 * subject:
 *
 *   {"id":"chatcmpl-…","object":"chat.completion.chunk",…,"delta":{"role":"assistant","content":""}}
 *   one chunk per token, "delta":{"content":"word "}, --rate per second
 *   a last chunk with "delta":{} and "finish_reason":"stop"
 *   [DONE]  with the header Sse-End: it ends the stream
 *
 * A message on the request's Sse-Cancel subject stops the answer early with
 * the same last chunk, [DONE] and Sse-End. A request that cannot be
 * answered (bad JSON, no user message, over --max-body, more than
 * --max-answers at once) gets one message with Sse-Event: error and Sse-End
 * whose body is an OpenAI-style {"error":{…}} object.
 *
 * The answer text is a function of the prompt alone, so a test can compute
 * it and check that every token arrived exactly once: with --text lorem
 * (the default) token i is LOREM[(fnv1a(prompt) + i) % LOREM_WORDS] and a
 * space (two neighbours are never equal, so a doubled token shows); with
 * --text echo it is the prompt's words in turn. The request's max_tokens
 * (or max_completion_tokens) sets the number of tokens, up to --max-tokens;
 * --tokens is the default.
 *
 * --stamp (for bench/requests.py) starts each token's text with
 * "<CLOCK_REALTIME ns> <n> ", its publishing time and its number from 1, so
 * sluice-bench measures each token's latency and counts lost or doubled
 * tokens per stream, as it does for its own publisher's messages.
 *
 * Threads: the main thread runs one libev loop that owns every answer and
 * its token timer. cnats delivers requests and cancel notices on its one
 * global delivery thread (natsOptions_UseGlobalMessageDelivery, so a
 * thousand cancel subscriptions do not make a thousand threads); its
 * callbacks only append to a locked mailbox and wake the loop (ev_async).
 * Publishing is thread-safe in cnats and is done from the loop, except for
 * the busy refusal, which the delivery thread sends itself so that a flood
 * never queues. Resources are bounded: at most --max-answers requests are
 * held (queued or answering), the rest are refused at once; a cancel
 * subscription takes at most one message (auto-unsubscribe), so cancel
 * mail is bounded by the answers.
 *
 * Rejected alternative: a thread or a cnats synchronous subscription per
 * answer. Either ties a thread to every open answer, and the bench runs a
 * thousand of them.
 */
#include <ev.h>
#include <jansson.h>
#include <nats/nats.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cl_log.h"
#include "cl_opt.h"

#define LLM_MODEL_MAX 64         /* bytes of a model name */
#define LLM_STREAM_ID_MAX 64     /* bytes of an Sse-Stream-Id we copy into chunk ids */
#define LLM_SUBJECT_MAX 256      /* bytes of a reply or cancel subject */
#define LLM_ECHO_WORDS_MAX 256   /* words of the prompt kept for --text echo */
#define LLM_WORD_MAX 48          /* bytes of one echoed word; longer ones are cut */
#define LLM_BODY_LIMIT (1 << 20) /* NATS's default max_payload: --max-body's ceiling */
#define LLM_CATCHUP_MAX 8        /* tokens one late tick may send to get back on pace */

static const char *const LOREM[] = {
    "lorem",      "ipsum",        "dolor",
    "sit",        "amet",         "consectetur",
    "adipiscing", "elit",         "sed",
    "do",         "eiusmod",      "tempor",
    "incididunt", "ut",           "labore",
    "et",         "dolore",       "magna",
    "aliqua",     "enim",         "ad",
    "minim",      "veniam",       "quis",
    "nostrud",    "exercitation", "ullamco",
    "laboris",    "nisi",         "aliquip",
    "ex",         "ea",           "commodo",
    "consequat",  "duis",         "aute",
    "irure",      "in",           "reprehenderit",
    "voluptate",  "velit",        "esse",
    "cillum",     "fugiat",       "nulla",
    "pariatur",   "excepteur",    "sint",
};
#define LOREM_WORDS (sizeof LOREM / sizeof LOREM[0])

enum text_mode { TEXT_LOREM, TEXT_ECHO };

struct options {
    const char *nats_url, *subject, *queue, *model;
    double rate;                    /* tokens per second per answer; > 0 */
    unsigned long long tokens;      /* default tokens per answer; <= max_tokens */
    unsigned long long max_tokens;  /* a request's max_tokens ceiling */
    unsigned long long max_answers; /* requests held at once (queued + answering) */
    unsigned long long max_body;    /* bytes of a request body */
    enum text_mode text;
    bool stamp; /* tokens start with "<realtime ns> <n> " */
};

/* One answer in progress; lives in the slot table, owned by the loop thread. */
struct answer {
    bool busy;
    uint32_t gen; /* bumped when the slot is freed: stale cancels miss */
    uint32_t slot;
    char *reply;              /* the stream's subject; owned */
    natsSubscription *cancel; /* NULL when the request named no Sse-Cancel */
    char id[16 + LLM_STREAM_ID_MAX];
    char model[LLM_MODEL_MAX + 1];
    long long created;          /* unix seconds */
    unsigned long long ntokens; /* tokens to send */
    unsigned long long next;    /* tokens sent; next <= ntokens */
    ev_tstamp start; /* loop time of the first token: token i is due at start + i / rate */
    uint32_t seed;   /* lorem offset: fnv1a(prompt) */
    char (*words)[LLM_WORD_MAX + 1]; /* echo words, nwords of them; owned */
    size_t nwords;
    ev_timer tick;
};

/* Mail from cnats's delivery thread to the loop. */
struct mail {
    struct mail *next;
    natsMsg *msg;    /* a request; NULL for a cancel notice */
    uint64_t cancel; /* slot << 32 | gen, for a cancel notice */
};

struct counters {
    unsigned long long answers, tokens, cancelled, bad, publish_errors;
};

struct service {
    struct options opt;
    struct ev_loop *loop;
    ev_async wake;
    ev_signal sigint, sigterm;
    natsConnection *nc;
    natsSubscription *sub;
    struct answer *slots; /* opt.max_answers of them */
    struct counters n;
    /* Shared with the delivery thread, under lock. */
    pthread_mutex_t lock;
    struct mail *head, **tail;
    unsigned long long held; /* requests queued or answering; <= opt.max_answers */
    unsigned long long refused_busy;
    bool stopping;
};

/* cnats's cancel callback gets a packed slot key as its closure, so it needs
 * the one service of this process from here. */
static struct service *the_service;

static void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p) {
        fputs("sluice-llm: out of memory\n", stderr);
        abort();
    }
    return p;
}

static char *xstrdup(const char *s)
{
    size_t n = strlen(s) + 1;
    return memcpy(xmalloc(n), s, n);
}

static uint32_t fnv1a(const char *s)
{
    uint32_t h = 2166136261u;
    for (; *s; s++)
        h = (h ^ (uint8_t)*s) * 16777619u;
    return h;
}

/* ---- publishing (thread-safe: cnats serialises writes) ---- */

/* Publishes one message; end adds Sse-End, event adds Sse-Event. */
static void publish(struct service *svc, const char *subject, const char *data, bool end,
                    const char *event)
{
    natsStatus s;
    if (!end && !event) {
        s = natsConnection_Publish(svc->nc, subject, data, (int)strlen(data));
    } else {
        natsMsg *m = NULL;
        s = natsMsg_Create(&m, subject, NULL, data, (int)strlen(data));
        if (s == NATS_OK && end)
            s = natsMsgHeader_Set(m, "Sse-End", "1");
        if (s == NATS_OK && event)
            s = natsMsgHeader_Set(m, "Sse-Event", event);
        if (s == NATS_OK)
            s = natsConnection_PublishMsg(svc->nc, m);
        natsMsg_Destroy(m);
    }
    if (s != NATS_OK)
        __atomic_add_fetch(&svc->n.publish_errors, 1, __ATOMIC_RELAXED);
}

/* The one-message error answer: Sse-Event: error, Sse-End, an OpenAI error body. */
static void publish_error(struct service *svc, const char *reply, const char *type,
                          const char *message)
{
    json_t *j = json_pack("{s:{s:s,s:s,s:n}}", "error", "message", message, "type", type, "code");
    char *body = j ? json_dumps(j, JSON_COMPACT) : NULL;
    if (body)
        publish(svc, reply, body, true, "error");
    free(body);
    json_decref(j);
}

/* ---- the answer ---- */

/* One chat.completion.chunk: role and content go into delta when non-NULL. */
static char *chunk_json(const struct answer *a, const char *role, const char *content,
                        const char *finish)
{
    json_t *delta = json_object();
    if (role)
        json_object_set_new(delta, "role", json_string(role));
    if (content)
        json_object_set_new(delta, "content", json_string(content));
    json_t *j = json_pack("{s:s,s:s,s:I,s:s,s:[{s:i,s:o,s:o}]}", "id", a->id, "object",
                          "chat.completion.chunk", "created", (json_int_t)a->created, "model",
                          a->model, "choices", "index", 0, "delta", delta, "finish_reason",
                          finish ? json_string(finish) : json_null());
    char *out = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    if (!out) {
        fputs("sluice-llm: cannot encode a chunk\n", stderr);
        abort();
    }
    return out;
}

static void send_chunk(struct service *svc, struct answer *a, const char *role, const char *content,
                       const char *finish)
{
    char *c = chunk_json(a, role, content, finish);
    publish(svc, a->reply, c, false, NULL);
    free(c);
}

static void token_text(const struct service *svc, const struct answer *a, unsigned long long i,
                       char *out, size_t cap)
{
    const char *w = a->nwords ? a->words[i % a->nwords] : LOREM[(a->seed + i) % LOREM_WORDS];
    if (svc->opt.stamp) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        snprintf(out, cap, "%llu %llu %s ",
                 (unsigned long long)ts.tv_sec * 1000000000ull + (unsigned long long)ts.tv_nsec,
                 i + 1, w);
    } else {
        snprintf(out, cap, "%s ", w);
    }
}

/*
 * Ends an answer: the slot is free, then the stop chunk and [DONE] with
 * Sse-End. Freed first: a client that has [DONE] may send its next
 * request at once, and it must not be refused as over --max-answers
 * (test_llm_service once saw that). The mail that request becomes is
 * read on this thread, after this returns, so the slot is free by then.
 */
static void answer_finish(struct service *svc, struct answer *a, bool cancelled)
{
    if (!a->busy)
        return;
    pthread_mutex_lock(&svc->lock);
    svc->held--;
    pthread_mutex_unlock(&svc->lock);
    ev_timer_stop(svc->loop, &a->tick);
    send_chunk(svc, a, NULL, NULL, "stop");
    publish(svc, a->reply, "[DONE]", true, NULL);
    if (a->cancel) {
        natsSubscription_Unsubscribe(a->cancel);
        natsSubscription_Destroy(a->cancel);
        a->cancel = NULL;
    }
    free(a->reply);
    free(a->words);
    a->reply = NULL;
    a->words = NULL;
    a->nwords = 0;
    a->busy = false;
    a->gen++;
    svc->n.answers++;
    if (cancelled)
        svc->n.cancelled++;
}

static void on_tick(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)revents;
    struct answer *a = (struct answer *)((char *)w - offsetof(struct answer, tick));
    struct service *svc = the_service;
    if (!a->busy)
        return;
    /* libev drops the ticks of a loop that ran late (a busy machine), so
     * the tokens due by now are counted from the start, not per tick: the
     * answer keeps --rate on average. Half a period of slack keeps an
     * on-time tick from finding its token not quite due yet. */
    unsigned long long due =
        (unsigned long long)((ev_now(loop) - a->start) * svc->opt.rate + 0.5) + 1;
    if (due > a->ntokens)
        due = a->ntokens;
    for (int k = 0; a->next < due && k < LLM_CATCHUP_MAX; k++) {
        char tok[LLM_WORD_MAX + 48];
        token_text(svc, a, a->next, tok, sizeof tok);
        send_chunk(svc, a, NULL, tok, NULL);
        a->next++;
        svc->n.tokens++;
    }
    if (a->next >= a->ntokens)
        answer_finish(svc, a, false);
}

static void on_cancel(natsConnection *nc, natsSubscription *sub, natsMsg *msg, void *closure)
{
    (void)nc;
    (void)sub;
    natsMsg_Destroy(msg);
    struct service *svc = the_service;
    struct mail *m = xmalloc(sizeof *m);
    m->next = NULL;
    m->msg = NULL;
    m->cancel = (uint64_t)(uintptr_t)closure;
    pthread_mutex_lock(&svc->lock);
    *svc->tail = m;
    svc->tail = &m->next;
    pthread_mutex_unlock(&svc->lock);
    ev_async_send(svc->loop, &svc->wake);
}

/* The prompt: the content of the last "user" message (a string, or an array of
 * {"type":"text","text":…} parts, joined). NULL with *why set when absent. */
static char *prompt_of(json_t *req, const char **why)
{
    json_t *msgs = json_object_get(req, "messages");
    if (!json_is_array(msgs) || json_array_size(msgs) == 0) {
        *why = "messages must be a non-empty array";
        return NULL;
    }
    for (size_t i = json_array_size(msgs); i-- > 0;) {
        json_t *m = json_array_get(msgs, i);
        const char *role = json_string_value(json_object_get(m, "role"));
        if (!role || strcmp(role, "user") != 0)
            continue;
        json_t *c = json_object_get(m, "content");
        if (json_is_string(c))
            return xstrdup(json_string_value(c));
        if (!json_is_array(c))
            break;
        size_t len = 0;
        for (size_t k = 0; k < json_array_size(c); k++)
            len += json_string_length(json_object_get(json_array_get(c, k), "text")) + 1;
        char *out = xmalloc(len + 1), *p = out;
        for (size_t k = 0; k < json_array_size(c); k++) {
            json_t *t = json_object_get(json_array_get(c, k), "text");
            if (!json_is_string(t))
                continue;
            size_t n = json_string_length(t);
            memcpy(p, json_string_value(t), n);
            p += n;
            *p++ = ' ';
        }
        *p = '\0';
        return out;
    }
    *why = "no user message with a string content";
    return NULL;
}

/* Splits the prompt into at most LLM_ECHO_WORDS_MAX words for --text echo. */
static void echo_words(struct answer *a, const char *prompt)
{
    a->words = xmalloc(LLM_ECHO_WORDS_MAX * sizeof *a->words);
    a->nwords = 0;
    const char *p = prompt;
    while (*p && a->nwords < LLM_ECHO_WORDS_MAX) {
        while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')
            p++;
        size_t n = 0;
        while (p[n] && p[n] != ' ' && p[n] != '\t' && p[n] != '\n' && p[n] != '\r')
            n++;
        if (n == 0)
            break;
        size_t keep = n < LLM_WORD_MAX ? n : LLM_WORD_MAX;
        /* A long word is cut on a UTF-8 boundary: jansson refuses a broken
         * sequence, and the token would lose its text. */
        while (keep < n && keep > 0 && ((unsigned char)p[keep] & 0xc0) == 0x80)
            keep--;
        memcpy(a->words[a->nwords], p, keep);
        a->words[a->nwords][keep] = '\0';
        a->nwords++;
        p += n;
    }
}

/* Reads the request into a; returns NULL or the reason it is refused. */
static const char *parse_request(struct service *svc, struct answer *a, natsMsg *msg)
{
    int len = natsMsg_GetDataLength(msg);
    if (len < 0 || (unsigned long long)len > svc->opt.max_body)
        return "request body too large";
    json_error_t jerr;
    json_t *req = json_loadb(natsMsg_GetData(msg), (size_t)len, JSON_REJECT_DUPLICATES, &jerr);
    if (!json_is_object(req)) {
        json_decref(req);
        return "request body is not a JSON object";
    }
    const char *why = NULL;
    json_t *model = json_object_get(req, "model");
    json_t *max = json_object_get(req, "max_completion_tokens");
    if (!max)
        max = json_object_get(req, "max_tokens");
    a->ntokens = svc->opt.tokens;
    if (model && (!json_is_string(model) || json_string_length(model) == 0 ||
                  json_string_length(model) > LLM_MODEL_MAX))
        why = "model must be a string of 1 to 64 bytes";
    else if (max && !json_is_null(max) &&
             (!json_is_integer(max) || json_integer_value(max) < 1 ||
              (unsigned long long)json_integer_value(max) > svc->opt.max_tokens))
        why = "max_tokens out of range";
    if (why) {
        json_decref(req);
        return why;
    }
    if (max && json_is_integer(max))
        a->ntokens = (unsigned long long)json_integer_value(max);
    snprintf(a->model, sizeof a->model, "%s", model ? json_string_value(model) : svc->opt.model);
    char *prompt = prompt_of(req, &why);
    json_decref(req);
    if (!prompt)
        return why;
    a->seed = fnv1a(prompt);
    if (svc->opt.text == TEXT_ECHO) {
        echo_words(a, prompt);
        if (a->nwords == 0) { /* nothing to echo: lorem instead */
            free(a->words);
            a->words = NULL;
        }
    }
    free(prompt);
    return NULL;
}

/*
 * A request header's value, or NULL. cnats 3.4.1 (Debian's) reads a header
 * with an empty value ("Sse-Principal:" when the gateway runs without auth)
 * as taking the next line, "Sse-Stream-Id: …", for its value, and the next
 * header is then not found; so a header that is missing is also looked for
 * as "Name: value" inside another header's value.
 */
static const char *header_of(natsMsg *msg, const char *name)
{
    const char *v = NULL;
    if (natsMsgHeader_Get(msg, name, &v) == NATS_OK)
        return v;
    const char **keys = NULL;
    int n = 0;
    if (natsMsgHeader_Keys(msg, &keys, &n) != NATS_OK)
        return NULL;
    size_t len = strlen(name);
    const char *found = NULL;
    for (int i = 0; i < n && !found; i++) {
        const char *w = NULL;
        if (natsMsgHeader_Get(msg, keys[i], &w) == NATS_OK && w && strncmp(w, name, len) == 0 &&
            w[len] == ':') {
            found = w + len + 1;
            while (*found == ' ' || *found == '\t')
                found++;
        }
    }
    free((void *)keys);
    return found;
}

static bool subject_ok(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > LLM_SUBJECT_MAX)
        return false;
    for (size_t i = 0; i < n; i++)
        if (s[i] <= ' ' || s[i] == 0x7f || s[i] == '*' || s[i] == '>')
            return false;
    return true;
}

/* A request from the mailbox: starts an answer in a free slot, or refuses it. */
static void answer_start(struct service *svc, natsMsg *msg)
{
    const char *reply = natsMsg_GetReply(msg), *why = NULL;
    struct answer *a = NULL;
    for (unsigned long long i = 0; i < svc->opt.max_answers; i++)
        if (!svc->slots[i].busy) {
            a = &svc->slots[i];
            break;
        }
    /* held <= max_answers leaves a free slot for every held request. */
    if (!a || !reply || !subject_ok(reply)) {
        svc->n.bad++;
        goto release;
    }
    why = parse_request(svc, a, msg);
    if (why) {
        svc->n.bad++;
        goto release;
    }
    const char *sid = header_of(msg, "Sse-Stream-Id"), *cancel = header_of(msg, "Sse-Cancel");
    bool sid_ok = sid && *sid && strlen(sid) <= LLM_STREAM_ID_MAX;
    for (const char *p = sid; sid_ok && *p; p++)
        sid_ok = (*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
                 *p == '-' || *p == '_';
    static unsigned long long serial;
    if (sid_ok)
        snprintf(a->id, sizeof a->id, "chatcmpl-%s", sid);
    else
        snprintf(a->id, sizeof a->id, "chatcmpl-%llx-%llu", (unsigned long long)time(NULL),
                 ++serial);
    a->busy = true;
    a->reply = xstrdup(reply);
    a->created = (long long)time(NULL);
    a->next = 0;
    a->cancel = NULL;
    if (cancel && subject_ok(cancel)) {
        uint64_t key = (uint64_t)a->slot << 32 | a->gen;
        if (natsConnection_Subscribe(&a->cancel, svc->nc, cancel, on_cancel,
                                     (void *)(uintptr_t)key) == NATS_OK)
            natsSubscription_AutoUnsubscribe(a->cancel, 1);
        else
            a->cancel = NULL;
    }
    send_chunk(svc, a, "assistant", "", NULL);
    /* The first token goes out now, the rest every 1/rate s: a client's time
     * to first token is the gateway's and NATS's, not ours. */
    a->start = ev_now(svc->loop);
    ev_timer_init(&a->tick, on_tick, 0., 1.0 / svc->opt.rate);
    ev_timer_start(svc->loop, &a->tick);
    natsMsg_Destroy(msg);
    return;
release:
    /* Freed before the answer, as in answer_finish(). */
    pthread_mutex_lock(&svc->lock);
    svc->held--;
    pthread_mutex_unlock(&svc->lock);
    if (why)
        publish_error(svc, reply, "invalid_request_error", why);
    natsMsg_Destroy(msg);
}

static void on_cancel_mail(struct service *svc, uint64_t key)
{
    uint32_t slot = (uint32_t)(key >> 32), gen = (uint32_t)key;
    if (slot >= svc->opt.max_answers)
        return;
    struct answer *a = &svc->slots[slot];
    if (a->busy && a->gen == gen)
        answer_finish(svc, a, true);
}

static void on_wake(struct ev_loop *loop, ev_async *w, int revents)
{
    (void)loop;
    (void)revents;
    struct service *svc = (struct service *)((char *)w - offsetof(struct service, wake));
    pthread_mutex_lock(&svc->lock);
    struct mail *m = svc->head;
    svc->head = NULL;
    svc->tail = &svc->head;
    pthread_mutex_unlock(&svc->lock);
    while (m) {
        struct mail *next = m->next;
        if (m->msg)
            answer_start(svc, m->msg);
        else
            on_cancel_mail(svc, m->cancel);
        free(m);
        m = next;
    }
}

/* cnats's delivery thread: queue the request, or refuse it at once when
 * --max-answers are already held. */
static void on_request(natsConnection *nc, natsSubscription *sub, natsMsg *msg, void *closure)
{
    (void)nc;
    (void)sub;
    struct service *svc = closure;
    pthread_mutex_lock(&svc->lock);
    bool full = svc->stopping || svc->held >= svc->opt.max_answers;
    bool first_refusal = false;
    if (full) {
        first_refusal = svc->refused_busy++ == 0;
    } else {
        struct mail *m = xmalloc(sizeof *m);
        m->next = NULL;
        m->msg = msg;
        m->cancel = 0;
        *svc->tail = m;
        svc->tail = &m->next;
        svc->held++;
    }
    pthread_mutex_unlock(&svc->lock);
    if (!full) {
        ev_async_send(svc->loop, &svc->wake);
        return;
    }
    if (first_refusal)
        fprintf(stderr, "sluice-llm: %llu answers in progress: refusing requests (counted)\n",
                svc->opt.max_answers);
    const char *reply = natsMsg_GetReply(msg);
    if (reply && subject_ok(reply))
        publish_error(svc, reply, "overloaded_error",
                      "the service is answering as many requests as it may; retry later");
    natsMsg_Destroy(msg);
}

/* SIGINT/SIGTERM: take no more requests, end every answer now (its client
 * sees a complete, shorter answer), flush, and leave the loop. */
static void on_signal(struct ev_loop *loop, ev_signal *w, int revents)
{
    (void)revents;
    struct service *svc = w->data;
    pthread_mutex_lock(&svc->lock);
    svc->stopping = true;
    pthread_mutex_unlock(&svc->lock);
    natsSubscription_Unsubscribe(svc->sub);
    on_wake(loop, &svc->wake, 0);
    for (unsigned long long i = 0; i < svc->opt.max_answers; i++)
        answer_finish(svc, &svc->slots[i], false);
    natsConnection_FlushTimeout(svc->nc, 2000);
    ev_break(loop, EVBREAK_ALL);
}

/* ---- options ---- */

static bool on_opt_text(void *dst, const char *value)
{
    enum text_mode *t = dst;
    *t = strcmp(value, "echo") == 0 ? TEXT_ECHO : TEXT_LOREM;
    return strcmp(value, "lorem") == 0 || strcmp(value, "echo") == 0;
}

/* 0, 1 after --help, -1 after a usage error (said on stderr). */
static int parse_options(int argc, char **argv, struct options *o)
{
    *o = (struct options){.nats_url = "nats://127.0.0.1:4222",
                          .subject = "llm.chat",
                          .queue = "sluice-llm",
                          .model = "sluice-llm",
                          .rate = 20,
                          .tokens = 32,
                          .max_tokens = 4096,
                          .max_answers = 1024,
                          .max_body = 65536,
                          .text = TEXT_LOREM};
    const struct cl_opt opts[] = {
        CL_OPT_STR("nats", &o->nats_url, "URL", "NATS server (default nats://127.0.0.1:4222)"),
        CL_OPT_STR("subject", &o->subject, "S", "service subject (default llm.chat)"),
        CL_OPT_STR("queue", &o->queue, "Q",
                   "queue group, shared by every copy (default sluice-llm)"),
        CL_OPT_REAL("rate", &o->rate, 10000, "R",
                    "tokens per second per answer (default 20; up to 10000)"),
        CL_OPT_ULL("tokens", &o->tokens, 1, 1000000, "N",
                   "tokens per answer when the request names no max_tokens\n(default 32)"),
        CL_OPT_ULL("max-tokens", &o->max_tokens, 1, 1000000, "N",
                   "largest max_tokens a request may ask for (default 4096)"),
        CL_OPT_ULL("max-answers", &o->max_answers, 1, 1000000, "N",
                   "requests answered at once; more are refused with an\n"
                   "error event (default 1024)"),
        CL_OPT_ULL("max-body", &o->max_body, 0, LLM_BODY_LIMIT, "BYTES",
                   "largest request body (default 65536; up to 1 MiB)"),
        CL_OPT_CALL("text", on_opt_text, &o->text, "lorem|echo",
                    "answer words: lorem ipsum from a prompt-chosen start,\n"
                    "or the prompt's words in turn (default lorem)"),
        CL_OPT_STR("model", &o->model, "NAME",
                   "model name when the request names none (default sluice-llm)"),
        CL_OPT_FLAG("stamp", &o->stamp,
                    "start each token with \"<CLOCK_REALTIME ns> <n> \" (for\n"
                    "bench/requests.py's latency and loss counts)"),
    };
    const struct cl_opt_spec spec = {
        .synopsis = "usage: sluice-llm [options]\n",
        .opts = opts,
        .nopts = sizeof opts / sizeof opts[0],
    };
    int rc = cl_opt_parse(&spec, argc, argv);
    if (rc != 0)
        return rc;
    if (o->rate <= 0)
        return cl_opt_fail(&spec, "--rate must be above 0");
    if (!*o->subject || strpbrk(o->subject, " \t\r\n"))
        return cl_opt_fail(&spec, "--subject must be a NATS subject");
    if (!*o->queue)
        return cl_opt_fail(&spec, "--queue must not be empty");
    if (!*o->model || strlen(o->model) > LLM_MODEL_MAX)
        return cl_opt_fail(&spec, "--model must be 1 to 64 bytes");
    if (o->tokens > o->max_tokens)
        o->tokens = o->max_tokens;
    return 0;
}

int main(int argc, char **argv)
{
    static struct service svc;
    cl_log_init("sluice-llm");
    int rc = parse_options(argc, argv, &svc.opt);
    if (rc != 0)
        return rc > 0 ? 0 : 2;
    the_service = &svc;
    signal(SIGPIPE, SIG_IGN);
    pthread_mutex_init(&svc.lock, NULL);
    svc.tail = &svc.head;
    svc.slots = calloc(svc.opt.max_answers, sizeof *svc.slots);
    if (!svc.slots) {
        fputs("sluice-llm: out of memory\n", stderr);
        return 2;
    }
    for (unsigned long long i = 0; i < svc.opt.max_answers; i++)
        svc.slots[i].slot = (uint32_t)i;
    svc.loop = ev_default_loop(0);
    ev_async_init(&svc.wake, on_wake);
    ev_async_start(svc.loop, &svc.wake);
    ev_signal_init(&svc.sigint, on_signal, SIGINT);
    ev_signal_init(&svc.sigterm, on_signal, SIGTERM);
    svc.sigint.data = svc.sigterm.data = &svc;
    ev_signal_start(svc.loop, &svc.sigint);
    ev_signal_start(svc.loop, &svc.sigterm);

    natsOptions *nopts = NULL;
    natsStatus s = natsOptions_Create(&nopts);
    if (s == NATS_OK)
        s = natsOptions_SetURL(nopts, svc.opt.nats_url);
    if (s == NATS_OK)
        s = natsOptions_SetName(nopts, "sluice-llm");
    if (s == NATS_OK)
        s = natsOptions_UseGlobalMessageDelivery(nopts, true);
    if (s == NATS_OK)
        s = natsOptions_SetMaxReconnect(nopts, -1);
    if (s == NATS_OK)
        s = natsOptions_SetReconnectWait(nopts, 250);
    if (s == NATS_OK)
        s = natsConnection_Connect(&svc.nc, nopts);
    if (s != NATS_OK) {
        fprintf(stderr, "sluice-llm: cannot connect to %s: %s\n", svc.opt.nats_url,
                natsStatus_GetText(s));
        return 2;
    }
    s = natsConnection_QueueSubscribe(&svc.sub, svc.nc, svc.opt.subject, svc.opt.queue, on_request,
                                      &svc);
    if (s == NATS_OK)
        s = natsConnection_FlushTimeout(svc.nc, 5000);
    if (s != NATS_OK) {
        fprintf(stderr, "sluice-llm: cannot subscribe to %s: %s\n", svc.opt.subject,
                natsStatus_GetText(s));
        return 2;
    }
    fprintf(stderr,
            "sluice-llm: ready on %s (queue %s) at %s, %.6g tokens/s, %llu answers at once\n",
            svc.opt.subject, svc.opt.queue, svc.opt.nats_url, svc.opt.rate, svc.opt.max_answers);

    ev_run(svc.loop, 0);

    fprintf(stderr,
            "sluice-llm: %llu answers (%llu cancelled), %llu tokens, %llu bad requests, "
            "%llu refused busy, %llu publish errors\n",
            svc.n.answers, svc.n.cancelled, svc.n.tokens, svc.n.bad, svc.refused_busy,
            __atomic_load_n(&svc.n.publish_errors, __ATOMIC_RELAXED));
    natsSubscription_Destroy(svc.sub);
    natsConnection_Destroy(svc.nc);
    natsOptions_Destroy(nopts);
    /* Waits for cnats's threads, so none outlives the slots they reference. */
    nats_CloseAndWait(5000);
    /* Cancel notices that came after the last wake-up; no thread adds more now. */
    while (svc.head) {
        struct mail *m = svc.head;
        svc.head = m->next;
        natsMsg_Destroy(m->msg);
        free(m);
    }
    free(svc.slots);
    pthread_mutex_destroy(&svc.lock);
    return 0;
}
