/* hello.c - the smallest spore program: open a context, call a function in
 * it, run a command there and print the output lines it forwards.
 *
 *   cc -std=c99 hello.c $(pkg-config --cflags --libs spore) -o hello
 */
#include <stdio.h>

#include <spore/spore.h>

int main(void)
{
    spore_router *router = NULL;
    spore_context *ctx = NULL;
    spore_result *info = NULL, *run = NULL;
    spore_log_record *rec = NULL;

    /* Each step runs only if the ones before succeeded. With "stream", the
     * command's output lines come back as log records while it runs. */
    int ok = spore_router_new(&router, NULL) == SPORE_OK &&
             spore_connect(&ctx, router, "local", NULL, NULL) == SPORE_OK &&
             spore_call(&info, ctx, "sys.info", NULL, NULL, 0, -1) == SPORE_OK &&
             spore_call(&run, ctx, "proc.run",
                        "{\"shell\": \"echo hello from $(hostname)\", \"stream\": true}",
                        NULL, 0, -1) == SPORE_OK;

    if (ok) {
        printf("%s: %s\n", spore_context_name(ctx), spore_result_json(info));
        while (spore_router_next_log(router, &rec, 0) == SPORE_OK) {
            printf("[%s %s] %s\n", spore_log_record_context(rec), spore_log_record_logger(rec),
                   spore_log_record_message(rec));
            spore_log_record_free(rec);
        }
    } else {
        fprintf(stderr, "hello: %s\n", spore_last_error()->message);
    }
    spore_result_free(run);
    spore_result_free(info);
    spore_context_free(ctx);
    spore_router_free(router);
    return ok ? 0 : 1;
}
