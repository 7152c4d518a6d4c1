/*
 * err.c - thread-local error messages; see err.h.
 */
#include "err.h"

#include <stdio.h>

static _Thread_local char msg[512];

int err_set(int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return code;
}

const char *err_get(void)
{
    return msg;
}

void err_clear(void)
{
    msg[0] = '\0';
}
