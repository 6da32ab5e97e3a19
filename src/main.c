/*
 * sluice: an HTTP/2 Server-Sent Events gateway for NATS subjects.
 * main only wires the modules: options, config, logging, then the server.
 */
#include <stdio.h>

#include "sluice/config.h"
#include "sluice/log.h"
#include "sluice/server.h"

int main(int argc, char **argv)
{
    struct config cfg;
    enum config_action action;
    char err[512];
    int code = 2;

    config_init(&cfg);
    if (config_parse_args(&cfg, argc, argv, &action, err, sizeof(err)) != 0) {
        fprintf(stderr, "sluice: %s\n", err);
        goto out;
    }
    if (action == CONFIG_HELP) {
        fputs(config_usage(), stdout);
        code = 0;
        goto out;
    }
    if (action == CONFIG_VERSION) {
        printf("sluice %s\n", SLUICE_VERSION);
        code = 0;
        goto out;
    }
    if (config_check(&cfg, err, sizeof(err)) != 0) {
        fprintf(stderr, "sluice: %s\n", err);
        goto out;
    }
    log_set_level(cfg.log_level);
    code = server_run(&cfg, argc, argv);
out:
    config_dispose(&cfg);
    return code;
}
