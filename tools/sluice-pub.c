/*
 * sluice-pub: publishes messages to NATS for the demo and the tests.
 *
 *   sluice-pub --nats URL --subject S [--event NAME] [--data TEXT]
 *              [--count N] [--rate PER_SECOND] [--seq] [--stream NAME:SUBJECTS]
 *              [--cycle N]
 *
 * --stream makes sure a JetStream stream NAME exists on SUBJECTS (comma-
 * separated; file storage, one replica) before publishing, and publishes
 * with JetStream acknowledgements; without --subject it only makes the
 * stream. This is what the demo uses to make its events resumable across
 * gateway restarts.
 *
 * --seq makes each payload "<n>" (1, 2, …) followed by --data, so a
 * receiver can check order, gaps and duplicates. --count 0 publishes
 * until killed. --cycle N replaces a '#' in the subject with 0, 1, …
 * N-1, 0, … in turn (the demo feeds every one of the page's demo.s<i>
 * streams with `--subject 'demo.s#' --cycle 200`). Payload escapes:
 * \n, \r and \\ in --data are decoded so tests can send line breaks
 * from a shell.
 */
#include <nats/nats.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static void usage(void)
{
    fputs("usage: sluice-pub --nats URL --subject S [--event NAME] [--data TEXT] [--count N]\n"
          "                  [--rate PER_SECOND] [--seq] [--stream NAME:SUBJECTS] [--cycle N]\n",
          stderr);
    exit(2);
}

static size_t unescape(char *s)
{
    size_t o = 0;
    for (size_t i = 0; s[i]; i++) {
        if (s[i] == '\\' && s[i + 1]) {
            i++;
            s[o++] = s[i] == 'n' ? '\n' : s[i] == 'r' ? '\r' : s[i];
        } else {
            s[o++] = s[i];
        }
    }
    s[o] = '\0';
    return o;
}

/* Makes the JetStream stream "NAME:subj,subj" unless it exists; 0 or 1. */
static int ensure_stream(natsConnection *nc, jsCtx **js, char *spec)
{
    char *colon = strchr(spec, ':');
    if (!colon || colon == spec || !colon[1]) {
        fprintf(stderr, "sluice-pub: --stream wants NAME:SUBJECTS\n");
        return 1;
    }
    *colon = '\0';
    const char *subjects[16];
    int n = 0;
    for (char *tok = strtok(colon + 1, ","); tok && n < 16; tok = strtok(NULL, ","))
        subjects[n++] = tok;
    natsStatus s = natsConnection_JetStream(js, nc, NULL);
    jsErrCode jerr = 0;
    jsStreamInfo *si = NULL;
    if (s == NATS_OK && js_GetStreamInfo(&si, *js, spec, NULL, &jerr) == NATS_OK) {
        jsStreamInfo_Destroy(si);
        return 0;
    }
    jsStreamConfig cfg;
    jsStreamConfig_Init(&cfg);
    cfg.Name = spec;
    cfg.Subjects = subjects;
    cfg.SubjectsLen = n;
    cfg.Storage = js_FileStorage;
    if (s == NATS_OK)
        s = js_AddStream(&si, *js, &cfg, NULL, &jerr);
    if (s != NATS_OK) {
        fprintf(stderr, "sluice-pub: cannot make stream %s: %s (JetStream error %d)\n", spec,
                natsStatus_GetText(s), (int)jerr);
        return 1;
    }
    jsStreamInfo_Destroy(si);
    return 0;
}

int main(int argc, char **argv)
{
    const char *url = "nats://127.0.0.1:4222", *subject = NULL, *event = NULL;
    char *data = NULL;
    long count = 1;
    double rate = 0;
    int seq = 0;
    long cycle = 0;
    char *stream = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--seq") == 0) {
            seq = 1;
            continue;
        }
        if (i + 1 >= argc)
            usage();
        const char *v = argv[++i];
        if (strcmp(a, "--nats") == 0)
            url = v;
        else if (strcmp(a, "--subject") == 0)
            subject = v;
        else if (strcmp(a, "--event") == 0)
            event = v;
        else if (strcmp(a, "--data") == 0)
            data = strdup(v);
        else if (strcmp(a, "--count") == 0)
            count = atol(v);
        else if (strcmp(a, "--rate") == 0)
            rate = atof(v);
        else if (strcmp(a, "--stream") == 0)
            stream = strdup(v);
        else if (strcmp(a, "--cycle") == 0 && (cycle = atol(v)) > 0)
            continue;
        else
            usage();
    }
    if (!subject && !stream)
        usage();
    size_t dlen = data ? unescape(data) : 0;

    natsConnection *nc = NULL;
    natsStatus s = natsConnection_ConnectTo(&nc, url);
    if (s != NATS_OK) {
        fprintf(stderr, "sluice-pub: cannot connect to %s: %s\n", url, natsStatus_GetText(s));
        return 1;
    }
    jsCtx *js = NULL;
    if (stream && ensure_stream(nc, &js, stream) != 0)
        return 1;
    if (!subject)
        count = -1; /* only the stream */
    /* With --cycle: the subject's text before and after its '#'. */
    const char *hash = subject && cycle > 0 ? strchr(subject, '#') : NULL;
    if (cycle > 0 && !hash) {
        fprintf(stderr, "sluice-pub: --cycle needs a '#' in the subject\n");
        return 2;
    }
    char *subj = subject ? malloc(strlen(subject) + 24) : NULL;
    char *payload = malloc(dlen + 32);
    struct timespec start;
    clock_gettime(CLOCK_MONOTONIC, &start);
    for (long n = 1; count >= 0 && (count == 0 || n <= count); n++) {
        size_t plen = 0;
        if (seq)
            plen = (size_t)snprintf(payload, 32, "%ld", n);
        if (dlen)
            memcpy(payload + plen, data, dlen);
        plen += dlen;
        natsMsg *m = NULL;
        if (hash)
            snprintf(subj, strlen(subject) + 24, "%.*s%ld%s", (int)(hash - subject), subject,
                     (n - 1) % cycle, hash + 1);
        s = natsMsg_Create(&m, hash ? subj : subject, NULL, payload, (int)plen);
        if (s == NATS_OK && event)
            s = natsMsgHeader_Set(m, "Sse-Event", event);
        if (s == NATS_OK && js) /* acknowledged: stored before the next one */
            s = js_PublishMsg(NULL, js, m, NULL, NULL);
        else if (s == NATS_OK)
            s = natsConnection_PublishMsg(nc, m);
        natsMsg_Destroy(m);
        if (s != NATS_OK) {
            fprintf(stderr, "sluice-pub: publish failed: %s\n", natsStatus_GetText(s));
            return 1;
        }
        if (rate > 0) {
            /* Paced against the start time, so rounding does not drift the rate. */
            double due = (double)n / rate;
            struct timespec now;
            clock_gettime(CLOCK_MONOTONIC, &now);
            double elapsed = (double)(now.tv_sec - start.tv_sec) + (now.tv_nsec - start.tv_nsec) / 1e9;
            if (due > elapsed) {
                natsConnection_Flush(nc);
                struct timespec d = {(time_t)(due - elapsed), (long)((due - elapsed - (time_t)(due - elapsed)) * 1e9)};
                nanosleep(&d, NULL);
            }
        }
    }
    s = natsConnection_FlushTimeout(nc, 5000);
    jsCtx_Destroy(js);
    natsConnection_Destroy(nc);
    free(payload);
    free(subj);
    free(data);
    free(stream);
    return s == NATS_OK ? 0 : 1;
}
