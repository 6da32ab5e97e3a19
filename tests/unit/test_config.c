/*
 * test_config: defaults, config_set, INI files and the command line.
 *
 * The INI files live in tests/unit/data; ctest passes that directory in
 * SLUICE_TEST_DATA, and a run by hand falls back to the directory next to
 * this source file.
 */
/* cmocka.h needs these before it, in this order. */
/* clang-format off */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>
/* clang-format on */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "sluice/config.h"
#include "sluice/err.h"
#include "sluice/log.h"

#define ERRLEN 256
#define PATHLEN 4096

static void data_path(char *out, const char *name)
{
    const char *dir = getenv("SLUICE_TEST_DATA");
    int n;
    if (dir != NULL && *dir != '\0') {
        n = snprintf(out, PATHLEN, "%s/%s", dir, name);
    } else {
        const char *slash = strrchr(__FILE__, '/');
        int dlen = slash ? (int)(slash - __FILE__) : 1;
        n = snprintf(out, PATHLEN, "%.*s/data/%s", dlen, slash ? __FILE__ : ".", name);
    }
    assert_true(n > 0 && n < PATHLEN);
}

/* An error message: non-empty, one line. */
static void expect_one_line(const char *err)
{
    size_t n = strnlen(err, ERRLEN);
    if (n == 0 || n == ERRLEN)
        fail_msg("error message empty or not terminated");
    if (strchr(err, '\n') != NULL)
        fail_msg("error message \"%s\" is more than one line", err);
}

static void test_defaults(void **state)
{
    (void)state;
    struct config c;
    config_init(&c);
    assert_non_null(c.listen);
    assert_string_equal(c.listen, "0.0.0.0:8443");
    assert_non_null(c.nats_url);
    assert_string_equal(c.nats_url, "nats://127.0.0.1:4222");
    assert_int_equal(c.workers, 0);
    assert_int_equal(c.max_streams, 4096);
    assert_int_equal(c.heartbeat_ms, 15000);
    assert_int_equal(c.retry_ms, 3000);
    assert_int_equal(c.retry_jitter_pct, 20);
    assert_int_equal(c.stream_queue_bytes, 262144);
    assert_int_equal(c.log_level, LOG_INFO);
    config_dispose(&c);
}

static void test_set_values(void **state)
{
    (void)state;
    struct config c;
    char err[ERRLEN] = "";
    config_init(&c);
    assert_int_equal(config_set(&c, "heartbeat-ms", "500", err, sizeof err), 0);
    assert_int_equal(c.heartbeat_ms, 500);
    assert_int_equal(config_set(&c, "listen", "127.0.0.1:1", err, sizeof err), 0);
    assert_string_equal(c.listen, "127.0.0.1:1");
    /* Set twice: the first copy is released (ASan would see a leak). */
    assert_int_equal(config_set(&c, "listen", "127.0.0.1:2", err, sizeof err), 0);
    assert_string_equal(c.listen, "127.0.0.1:2");
    assert_int_equal(config_set(&c, "workers", "2", err, sizeof err), 0);
    assert_int_equal(c.workers, 2);
    assert_int_equal(config_set(&c, "max-streams", "100", err, sizeof err), 0);
    assert_int_equal(c.max_streams, 100);
    assert_int_equal(config_set(&c, "retry-ms", "2000", err, sizeof err), 0);
    assert_int_equal(c.retry_ms, 2000);
    assert_int_equal(config_set(&c, "retry-jitter-pct", "0", err, sizeof err), 0);
    assert_int_equal(c.retry_jitter_pct, 0);
    assert_int_equal(config_set(&c, "stream-queue-bytes", "1048576", err, sizeof err), 0);
    assert_int_equal(c.stream_queue_bytes, 1048576);
    config_dispose(&c);
}

/* request-route is repeatable: each one adds an entry; an empty value clears them. */
static void test_request_route_list(void **state)
{
    (void)state;
    struct config c;
    char err[ERRLEN] = "";
    config_init(&c);
    assert_string_equal(c.request_routes, "");
    assert_int_equal(config_set(&c, "request-route", "/v1/chat/completions llm.chat", err,
                                sizeof err), 0);
    assert_int_equal(config_set(&c, "request-route", "/jobs jobs.run", err, sizeof err), 0);
    assert_string_equal(c.request_routes, "/v1/chat/completions llm.chat,/jobs jobs.run");
    assert_int_equal(config_set(&c, "request-route", "", err, sizeof err), 0);
    assert_string_equal(c.request_routes, "");
    assert_string_equal(c.request_reply_prefix, "$SLUICE.reply");
    config_dispose(&c);
}

static void test_set_log_level(void **state)
{
    (void)state;
    static const struct {
        const char *name;
        enum log_level level;
    } levels[] = {
        {"debug", LOG_DEBUG}, {"info", LOG_INFO}, {"warn", LOG_WARN}, {"error", LOG_ERROR}};
    struct config c;
    char err[ERRLEN] = "";
    config_init(&c);
    for (size_t i = 0; i < sizeof levels / sizeof levels[0]; i++) {
        assert_int_equal(config_set(&c, "log-level", levels[i].name, err, sizeof err), 0);
        assert_int_equal(c.log_level, levels[i].level);
    }
    assert_int_equal(config_set(&c, "log-level", "loud", err, sizeof err), ERR_INVALID);
    expect_one_line(err);
    config_dispose(&c);
}

static void test_set_unknown_key(void **state)
{
    (void)state;
    struct config c;
    char err[ERRLEN] = "";
    config_init(&c);
    assert_int_equal(config_set(&c, "no-such-key", "1", err, sizeof err), ERR_INVALID);
    expect_one_line(err);
    if (strstr(err, "no-such-key") == NULL)
        fail_msg("error \"%s\" does not name the key", err);
    config_dispose(&c);
}

static void expect_bad_value(const char *key, const char *value)
{
    struct config c;
    char err[ERRLEN] = "";
    config_init(&c);
    int rc = config_set(&c, key, value, err, sizeof err);
    if (rc != ERR_INVALID)
        fail_msg("config_set(\"%s\", \"%s\") returned %d, want ERR_INVALID", key, value, rc);
    expect_one_line(err);
    config_dispose(&c);
}

static void test_set_bad_integers(void **state)
{
    (void)state;
    static const char *const int_keys[] = {"workers",  "max-streams",      "heartbeat-ms",
                                           "retry-ms", "retry-jitter-pct", "stream-queue-bytes"};
    for (size_t i = 0; i < sizeof int_keys / sizeof int_keys[0]; i++) {
        expect_bad_value(int_keys[i], "12x");
        expect_bad_value(int_keys[i], "x12");
        expect_bad_value(int_keys[i], "");
        expect_bad_value(int_keys[i], "1.5");
        expect_bad_value(int_keys[i], "99999999999999999999999");
    }
    expect_bad_value("max-streams", "-1");
    expect_bad_value("heartbeat-ms", "-500");
    expect_bad_value("retry-ms", "-1");
    expect_bad_value("stream-queue-bytes", "-1");
    /* Zero where zero makes no sense. */
    expect_bad_value("max-streams", "0");
    expect_bad_value("heartbeat-ms", "0");
    expect_bad_value("stream-queue-bytes", "0");
}

static void test_load_good_file(void **state)
{
    (void)state;
    char path[PATHLEN];
    char err[ERRLEN] = "";
    struct config c;
    data_path(path, "good.ini");
    config_init(&c);
    int rc = config_load(&c, path, err, sizeof err);
    if (rc != 0)
        fail_msg("config_load(%s) returned %d: %s", path, rc, err);
    assert_string_equal(c.listen, "127.0.0.1:9443");
    assert_int_equal(c.workers, 3);
    assert_int_equal(c.max_streams, 77);
    assert_int_equal(c.heartbeat_ms, 1234);
    assert_int_equal(c.retry_ms, 2500);
    assert_int_equal(c.retry_jitter_pct, 10);
    assert_int_equal(c.stream_queue_bytes, 65536);
    assert_int_equal(c.log_level, LOG_DEBUG);
    /* Keys the file does not name keep their defaults. */
    assert_string_equal(c.nats_url, "nats://127.0.0.1:4222");
    config_dispose(&c);
}

static void test_load_sluice_section(void **state)
{
    (void)state;
    char path[PATHLEN];
    char err[ERRLEN] = "";
    struct config c;
    data_path(path, "section.ini");
    config_init(&c);
    int rc = config_load(&c, path, err, sizeof err);
    if (rc != 0)
        fail_msg("config_load(%s) returned %d: %s", path, rc, err);
    assert_string_equal(c.listen, "127.0.0.1:9444");
    assert_int_equal(c.workers, 5);
    assert_int_equal(c.heartbeat_ms, 4321);
    config_dispose(&c);
}

static void expect_load_error(const char *name, int line)
{
    char path[PATHLEN];
    char want[PATHLEN + 32];
    char err[ERRLEN] = "";
    struct config c;
    data_path(path, name);
    snprintf(want, sizeof want, "%s:%d:", path, line);
    config_init(&c);
    int rc = config_load(&c, path, err, sizeof err);
    if (rc != ERR_INVALID)
        fail_msg("config_load(%s) returned %d, want ERR_INVALID", path, rc);
    expect_one_line(err);
    if (strstr(err, want) == NULL)
        fail_msg("config_load(%s) error \"%s\" lacks \"%s\"", path, err, want);
    config_dispose(&c);
}

static void test_load_unknown_key_names_line(void **state)
{
    (void)state;
    expect_load_error("unknown-key-line3.ini", 3);
}

static void test_load_bad_value_names_line(void **state)
{
    (void)state;
    expect_load_error("bad-value-line2.ini", 2);
}

static void test_load_reports_first_error(void **state)
{
    (void)state;
    char path[PATHLEN];
    char err[ERRLEN] = "";
    struct config c;
    data_path(path, "two-errors.ini");
    config_init(&c);
    assert_int_equal(config_load(&c, path, err, sizeof err), ERR_INVALID);
    expect_one_line(err);
    /* Line number and reason belong to the same (first) bad line. */
    char want[PATHLEN + 8];
    snprintf(want, sizeof want, "%s:2:", path);
    if (strstr(err, want) == NULL || strstr(err, "first-bad-key") == NULL)
        fail_msg("error \"%s\" should report line 2 and its key first-bad-key", err);
    config_dispose(&c);
}

static void test_load_missing_file(void **state)
{
    (void)state;
    char path[PATHLEN];
    char err[ERRLEN] = "";
    struct config c;
    data_path(path, "does-not-exist.ini");
    config_init(&c);
    assert_int_equal(config_load(&c, path, err, sizeof err), ERR_IO);
    expect_one_line(err);
    if (strstr(err, path) == NULL)
        fail_msg("error \"%s\" does not name %s", err, path);
    config_dispose(&c);
}

/*
 * config_parse_args() may use getopt_long(), whose state is global: reset
 * it with optind = 0 (a full reinitialisation in glibc) before every call.
 */
static int parse(struct config *c, int argc, char **argv, enum config_action *action, char *err)
{
    optind = 0;
    return config_parse_args(c, argc, argv, action, err, ERRLEN);
}

#define ARGC(v) ((int)(sizeof(v) / sizeof((v)[0])) - 1)

static void test_args_run(void **state)
{
    (void)state;
    char *argv[] = {"sluice", "--listen", "127.0.0.1:1", "--workers", "2", NULL};
    struct config c;
    enum config_action action = CONFIG_HELP;
    char err[ERRLEN] = "";
    config_init(&c);
    int rc = parse(&c, ARGC(argv), argv, &action, err);
    if (rc != 0)
        fail_msg("config_parse_args returned %d: %s", rc, err);
    assert_int_equal(action, CONFIG_RUN);
    assert_string_equal(c.listen, "127.0.0.1:1");
    assert_int_equal(c.workers, 2);
    assert_int_equal(c.heartbeat_ms, 15000); /* untouched */
    config_dispose(&c);
}

static void test_args_no_flags(void **state)
{
    (void)state;
    char *argv[] = {"sluice", NULL};
    struct config c;
    enum config_action action = CONFIG_HELP;
    char err[ERRLEN] = "";
    config_init(&c);
    assert_int_equal(parse(&c, ARGC(argv), argv, &action, err), 0);
    assert_int_equal(action, CONFIG_RUN);
    assert_string_equal(c.listen, "0.0.0.0:8443");
    config_dispose(&c);
}

static void test_args_equals_form(void **state)
{
    (void)state;
    char *argv[] = {"sluice", "--listen=127.0.0.1:3", "--heartbeat-ms=800", "--log-level=warn",
                    NULL};
    struct config c;
    enum config_action action = CONFIG_HELP;
    char err[ERRLEN] = "";
    config_init(&c);
    int rc = parse(&c, ARGC(argv), argv, &action, err);
    if (rc != 0)
        fail_msg("config_parse_args returned %d: %s", rc, err);
    assert_int_equal(action, CONFIG_RUN);
    assert_string_equal(c.listen, "127.0.0.1:3");
    assert_int_equal(c.heartbeat_ms, 800);
    assert_int_equal(c.log_level, LOG_WARN);
    config_dispose(&c);
}

static void test_args_help_version(void **state)
{
    (void)state;
    char *help[] = {"sluice", "--help", NULL};
    char *version[] = {"sluice", "--version", NULL};
    struct config c;
    enum config_action action = CONFIG_RUN;
    char err[ERRLEN] = "";

    config_init(&c);
    assert_int_equal(parse(&c, ARGC(help), help, &action, err), 0);
    assert_int_equal(action, CONFIG_HELP);
    config_dispose(&c);

    action = CONFIG_RUN;
    config_init(&c);
    assert_int_equal(parse(&c, ARGC(version), version, &action, err), 0);
    assert_int_equal(action, CONFIG_VERSION);
    config_dispose(&c);

    const char *usage = config_usage();
    assert_non_null(usage);
    assert_true(usage[0] != '\0');
}

static void expect_args_error(int argc, char **argv, int want_rc, const char *mention)
{
    struct config c;
    enum config_action action = CONFIG_RUN;
    char err[ERRLEN] = "";
    config_init(&c);
    int rc = parse(&c, argc, argv, &action, err);
    if (rc != want_rc)
        fail_msg("config_parse_args(%s ...) returned %d, want %d", argv[1], rc, want_rc);
    expect_one_line(err);
    if (mention != NULL && strstr(err, mention) == NULL)
        fail_msg("error \"%s\" does not mention \"%s\"", err, mention);
    config_dispose(&c);
}

static void test_args_unknown_flag(void **state)
{
    (void)state;
    char *argv[] = {"sluice", "--bogus", NULL};
    expect_args_error(ARGC(argv), argv, ERR_INVALID, "bogus");
    char *argv2[] = {"sluice", "--listen", "127.0.0.1:1", "--bogus", "1", NULL};
    expect_args_error(ARGC(argv2), argv2, ERR_INVALID, "bogus");
}

static void test_args_missing_value(void **state)
{
    (void)state;
    char *argv[] = {"sluice", "--listen", NULL};
    expect_args_error(ARGC(argv), argv, ERR_INVALID, NULL);
    char *argv2[] = {"sluice", "--workers", "2", "--heartbeat-ms", NULL};
    expect_args_error(ARGC(argv2), argv2, ERR_INVALID, NULL);
}

static void test_args_bad_value(void **state)
{
    (void)state;
    char *argv[] = {"sluice", "--heartbeat-ms", "12x", NULL};
    expect_args_error(ARGC(argv), argv, ERR_INVALID, NULL);
    char *argv2[] = {"sluice", "--log-level", "loud", NULL};
    expect_args_error(ARGC(argv2), argv2, ERR_INVALID, NULL);
}

static void test_args_missing_config_file(void **state)
{
    (void)state;
    char path[PATHLEN];
    data_path(path, "does-not-exist.ini");
    char *argv[] = {"sluice", "--config", path, NULL};
    expect_args_error(ARGC(argv), argv, ERR_IO, path);
}

static void test_args_bad_config_file(void **state)
{
    (void)state;
    char path[PATHLEN];
    char want[PATHLEN + 8];
    data_path(path, "unknown-key-line3.ini");
    snprintf(want, sizeof want, "%s:3:", path);
    char *argv[] = {"sluice", "--config", path, NULL};
    expect_args_error(ARGC(argv), argv, ERR_INVALID, want);
}

static void expect_heartbeat(int argc, char **argv, int heartbeat_ms, int workers)
{
    struct config c;
    enum config_action action = CONFIG_HELP;
    char err[ERRLEN] = "";
    config_init(&c);
    int rc = parse(&c, argc, argv, &action, err);
    if (rc != 0)
        fail_msg("config_parse_args returned %d: %s", rc, err);
    assert_int_equal(action, CONFIG_RUN);
    if (c.heartbeat_ms != heartbeat_ms)
        fail_msg("heartbeat_ms %d, want %d", c.heartbeat_ms, heartbeat_ms);
    assert_int_equal(c.workers, workers);
    config_dispose(&c);
}

static void test_args_config_file_only(void **state)
{
    (void)state;
    char path[PATHLEN];
    data_path(path, "heartbeat-100.ini");
    char *argv[] = {"sluice", "--config", path, NULL};
    expect_heartbeat(ARGC(argv), argv, 100, 4);
}

static void test_args_flags_override_file(void **state)
{
    (void)state;
    char path[PATHLEN];
    char eq[PATHLEN + 16];
    data_path(path, "heartbeat-100.ini");
    snprintf(eq, sizeof eq, "--config=%s", path);

    char *after[] = {"sluice", "--config", path, "--heartbeat-ms", "700", NULL};
    expect_heartbeat(ARGC(after), after, 700, 4);

    /* The file is read first whatever its place on the command line. */
    char *before[] = {"sluice", "--heartbeat-ms", "700", "--config", path, NULL};
    expect_heartbeat(ARGC(before), before, 700, 4);

    char *eq_form[] = {"sluice", "--heartbeat-ms=700", eq, "--workers=1", NULL};
    expect_heartbeat(ARGC(eq_form), eq_form, 700, 1);
}

static void test_check_default_with_cert(void **state)
{
    (void)state;
    char cert[PATHLEN], key[PATHLEN];
    char err[ERRLEN] = "";
    struct config c;
    data_path(cert, "placeholder-cert.txt");
    data_path(key, "placeholder-key.txt");
    config_init(&c);
    assert_int_equal(config_set(&c, "cert", cert, err, sizeof err), 0);
    assert_int_equal(config_set(&c, "key", key, err, sizeof err), 0);
    assert_string_equal(c.cert_file, cert);
    assert_string_equal(c.key_file, key);
    int rc = config_check(&c, err, sizeof err);
    if (rc != 0)
        fail_msg("config_check returned %d: %s", rc, err);
    config_dispose(&c);
}

static void test_negative_workers_refused(void **state)
{
    (void)state;
    char cert[PATHLEN], key[PATHLEN];
    char err[ERRLEN] = "";
    struct config c;
    data_path(cert, "placeholder-cert.txt");
    data_path(key, "placeholder-key.txt");
    config_init(&c);
    assert_int_equal(config_set(&c, "cert", cert, err, sizeof err), 0);
    assert_int_equal(config_set(&c, "key", key, err, sizeof err), 0);
    /* Refused by config_set or, failing that, by config_check. */
    if (config_set(&c, "workers", "-1", err, sizeof err) == 0)
        assert_int_equal(config_check(&c, err, sizeof err), ERR_INVALID);
    expect_one_line(err);
    config_dispose(&c);
}

/* The keys of the reserved-subject, Host and IPv6 prefix rules. */
static void test_reserved_host_ipv6_keys(void **state)
{
    (void)state;
    char cert[PATHLEN], key[PATHLEN];
    char err[ERRLEN] = "";
    struct config c;
    data_path(cert, "placeholder-cert.txt");
    data_path(key, "placeholder-key.txt");
    config_init(&c);
    assert_string_equal(c.allow_subjects, "");
    assert_string_equal(c.allowed_hosts, "");
    assert_int_equal(c.ipv6_prefix_bits, 64);
    assert_int_equal(config_set(&c, "cert", cert, err, sizeof err), 0);
    assert_int_equal(config_set(&c, "key", key, err, sizeof err), 0);
    assert_int_equal(config_set(&c, "allowed-hosts", "a.example,b.example", err, sizeof err), 0);
    assert_int_equal(config_set(&c, "ipv6-prefix-bits", "56", err, sizeof err), 0);
    assert_int_equal(c.ipv6_prefix_bits, 56);
    expect_bad_value("ipv6-prefix-bits", "0");
    expect_bad_value("ipv6-prefix-bits", "129");
    assert_int_equal(config_set(&c, "allow-subjects", "$KV.cfg.>,_INBOX.app.*", err, sizeof err),
                     0);
    assert_int_equal(config_check(&c, err, sizeof err), 0);
    /* A wildcard first token would hand a client's '>' NATS's own subjects. */
    static const char *const bad[] = {">", "*.>", "orders.>", "$KV..x", "$KV.>,,$SYS.x"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_int_equal(config_set(&c, "allow-subjects", bad[i], err, sizeof err), 0);
        err[0] = '\0';
        if (config_check(&c, err, sizeof err) != ERR_INVALID)
            fail_msg("allow-subjects '%s' passed config_check", bad[i]);
        assert_non_null(strstr(err, "allow-subjects"));
        expect_one_line(err);
    }
    config_dispose(&c);
}

/* proxy-protocol names listeners; trusted-proxies is a CIDR list; both checked at start. */
static void test_client_address_keys(void **state)
{
    (void)state;
    struct config c;
    char err[256], cert[512], key[512];
    data_path(cert, "placeholder-cert.txt");
    data_path(key, "placeholder-key.txt");
    config_init(&c);
    assert_string_equal(c.proxy_protocol, "off");
    assert_string_equal(c.trusted_proxies, "");
    assert_int_equal(c.max_streams_per_principal, 0);
    assert_int_equal(c.principal_stream_rate, 0);
    assert_int_equal(config_set(&c, "cert", cert, err, sizeof err), 0);
    assert_int_equal(config_set(&c, "key", key, err, sizeof err), 0);
    bool tls, plain;
    assert_int_equal(config_set(&c, "proxy-protocol", "listen", err, sizeof err), 0);
    assert_int_equal(config_check(&c, err, sizeof err), 0);
    assert_int_equal(config_proxy_protocol(&c, &tls, &plain), 0);
    assert_true(tls && !plain);
    /* listen-plain is off by default: marking it is a mistake. */
    assert_int_equal(config_set(&c, "proxy-protocol", "listen, listen-plain", err, sizeof err), 0);
    assert_int_equal(config_check(&c, err, sizeof err), ERR_INVALID);
    expect_one_line(err);
    assert_int_equal(config_set(&c, "listen-plain", "127.0.0.1:0", err, sizeof err), 0);
    assert_int_equal(config_check(&c, err, sizeof err), 0);
    assert_int_equal(config_proxy_protocol(&c, &tls, &plain), 0);
    assert_true(tls && plain);
    static const char *const bad_pp[] = {"on", "listen,", "tls", ",", "listen;listen-plain"};
    for (size_t i = 0; i < sizeof(bad_pp) / sizeof(bad_pp[0]); i++) {
        assert_int_equal(config_set(&c, "proxy-protocol", bad_pp[i], err, sizeof err), 0);
        if (config_check(&c, err, sizeof err) != ERR_INVALID)
            fail_msg("proxy-protocol '%s' passed config_check", bad_pp[i]);
        assert_non_null(strstr(err, "proxy-protocol"));
    }
    assert_int_equal(config_set(&c, "proxy-protocol", "off", err, sizeof err), 0);
    assert_int_equal(config_set(&c, "trusted-proxies", "10.0.0.0/8, ::1", err, sizeof err), 0);
    assert_int_equal(config_check(&c, err, sizeof err), 0);
    assert_int_equal(config_set(&c, "trusted-proxies", "10.0.0.0/40", err, sizeof err), 0);
    assert_int_equal(config_check(&c, err, sizeof err), ERR_INVALID);
    assert_non_null(strstr(err, "trusted-proxies"));
    expect_one_line(err);
    assert_int_equal(config_set(&c, "max-streams-per-principal", "5", err, sizeof err), 0);
    assert_int_equal(config_set(&c, "principal-stream-rate", "2", err, sizeof err), 0);
    expect_bad_value("max-streams-per-principal", "-1");
    expect_bad_value("principal-stream-rate", "x");
    config_dispose(&c);
}

/*
 * Every setting of the table is in --help, so the man page (generated from
 * --help by scripts/gen-man.py) and the README check (tests/e2e/
 * test_man_page.py, from --help) cover every key: a key added to the table
 * without its --help line fails here.
 */
static void test_every_key_in_help(void **state)
{
    (void)state;
    const char *usage = config_usage();
    size_t n = 0;
    for (const char *name; (name = config_key_name(n)) != NULL; n++) {
        char flag[80];
        snprintf(flag, sizeof(flag), "--%s ", name);
        char flag_comma[80];
        snprintf(flag_comma, sizeof(flag_comma), "--%s,", name);
        if (!strstr(usage, flag) && !strstr(usage, flag_comma))
            fail_msg("config key '%s' has no '--%s' line in --help (config.c USAGE)", name, name);
    }
    assert_true(n > 50);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_client_address_keys),
        cmocka_unit_test(test_reserved_host_ipv6_keys),
        cmocka_unit_test(test_set_values),
        cmocka_unit_test(test_request_route_list),
        cmocka_unit_test(test_set_log_level),
        cmocka_unit_test(test_set_unknown_key),
        cmocka_unit_test(test_set_bad_integers),
        cmocka_unit_test(test_load_good_file),
        cmocka_unit_test(test_load_sluice_section),
        cmocka_unit_test(test_load_unknown_key_names_line),
        cmocka_unit_test(test_load_bad_value_names_line),
        cmocka_unit_test(test_load_reports_first_error),
        cmocka_unit_test(test_load_missing_file),
        cmocka_unit_test(test_args_run),
        cmocka_unit_test(test_args_no_flags),
        cmocka_unit_test(test_args_equals_form),
        cmocka_unit_test(test_args_help_version),
        cmocka_unit_test(test_args_unknown_flag),
        cmocka_unit_test(test_args_missing_value),
        cmocka_unit_test(test_args_bad_value),
        cmocka_unit_test(test_args_missing_config_file),
        cmocka_unit_test(test_args_bad_config_file),
        cmocka_unit_test(test_args_config_file_only),
        cmocka_unit_test(test_args_flags_override_file),
        cmocka_unit_test(test_check_default_with_cert),
        cmocka_unit_test(test_negative_workers_refused),
        cmocka_unit_test(test_every_key_in_help),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
