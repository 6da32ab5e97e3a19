/*
 * sluice-pub: publishes messages to NATS for the demo and the tests.
 *
 *   sluice-pub --nats URL --subject S [--event NAME] [--data TEXT]
 *              [--count N] [--rate PER_SECOND] [--seq]
 *
 * --seq makes each payload "<n>" (1, 2, …) followed by --data, so a
 * receiver can check order, gaps and duplicates. --count 0 publishes
 * until killed. Payload escapes: \n, \r and \\ in --data are decoded so
 * tests can send line breaks from a shell.
 */
#include <nats/nats.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static void usage(void)
{
    fputs("usage: sluice-pub --nats URL --subject S [--event NAME] [--data TEXT] [--count N]\n"
          "                  [--rate PER_SECOND] [--seq]\n",
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

int main(int argc, char **argv)
{
    const char *url = "nats://127.0.0.1:4222", *subject = NULL, *event = NULL;
    char *data = NULL;
    long count = 1;
    double rate = 0;
    int seq = 0;
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
        else
            usage();
    }
    if (!subject)
        usage();
    size_t dlen = data ? unescape(data) : 0;

    natsConnection *nc = NULL;
    natsStatus s = natsConnection_ConnectTo(&nc, url);
    if (s != NATS_OK) {
        fprintf(stderr, "sluice-pub: cannot connect to %s: %s\n", url, natsStatus_GetText(s));
        return 1;
    }
    char *payload = malloc(dlen + 32);
    struct timespec start;
    clock_gettime(CLOCK_MONOTONIC, &start);
    for (long n = 1; count == 0 || n <= count; n++) {
        size_t plen = 0;
        if (seq)
            plen = (size_t)snprintf(payload, 32, "%ld", n);
        if (dlen)
            memcpy(payload + plen, data, dlen);
        plen += dlen;
        natsMsg *m = NULL;
        s = natsMsg_Create(&m, subject, NULL, payload, (int)plen);
        if (s == NATS_OK && event)
            s = natsMsgHeader_Set(m, "Sse-Event", event);
        if (s == NATS_OK)
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
    natsConnection_Destroy(nc);
    free(payload);
    free(data);
    return s == NATS_OK ? 0 : 1;
}
