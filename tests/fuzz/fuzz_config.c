/* libFuzzer: the config loader with the routes section. */
#include "proxy/config.h"
#include "routing/route.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const sy_conf_section_t *const sections[] = {&sy_routes_section};
    char *text = malloc(size + 1);
    if (text == NULL)
        return 0;
    memcpy(text, data, size);
    text[size] = '\0';
    sy_conf_t errs;
    sy_config_t *cfg = sy_config_load_string(&errs, "fuzz.yaml", text, sections, 1);
    sy_conf_close(&errs);
    sy_config_release(cfg);
    free(text);
    return 0;
}
