/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>

#include "log.h"
#include "worker.h"

typedef struct Work {
        Workers *workers;
        WorkFunc work;
        WorkDone done;
        void *userdata;
        int result;
        struct Work *next;      /* in the queue of work waiting for a thread */
} Work;

struct Workers {
        sd_event_source *source;
        int pipe[2];            /* finished Work pointers, from the threads to the loop */
        unsigned running;       /* work on a thread or waiting for one */
        unsigned threads;       /* work on a thread */
        unsigned max_threads;
        unsigned max;           /* running at most */
        Work *queue_head, *queue_tail;
};

static void *work_thread(void *p) {
        Work *w = p;
        ssize_t n;

        w->result = w->work(w->userdata);
        /* A pointer is far below PIPE_BUF: the write is atomic and the pipe never fills up,
         * since at most max_threads pointers are ever in it. */
        do
                n = write(w->workers->pipe[1], &w, sizeof w);
        while (n < 0 && errno == EINTR);
        if (n != sizeof w)
                abort();    /* the loop would wait for this work forever */
        return NULL;
}

static int work_start_thread(Work *item) {
        pthread_attr_t attr;
        sigset_t all, saved;
        pthread_t thread;
        int r;

        /* Signals stay with the loop (it reads them from a signalfd). */
        sigfillset(&all);
        pthread_sigmask(SIG_SETMASK, &all, &saved);
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        r = -pthread_create(&thread, &attr, work_thread, item);
        pthread_attr_destroy(&attr);
        pthread_sigmask(SIG_SETMASK, &saved, NULL);
        if (r >= 0)
                item->workers->threads++;
        return r;
}

/* Hands the oldest waiting work to the thread that just came free. */
static void work_start_queued(Workers *w) {
        while (w->queue_head && w->threads < w->max_threads) {
                Work *item = w->queue_head;
                int r;

                w->queue_head = item->next;
                if (!w->queue_head)
                        w->queue_tail = NULL;
                r = work_start_thread(item);
                if (r < 0) {
                        item->result = r;
                        w->running--;
                        item->done(r, item->userdata);
                        free(item);
                }
        }
}

static void work_finish(Work *item) {
        Workers *w = item->workers;

        w->threads--;
        w->running--;
        item->done(item->result, item->userdata);
        free(item);
        work_start_queued(w);
}

static int on_work_done(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        Work *w;

        while (read(fd, &w, sizeof w) == sizeof w)
                work_finish(w);
        return 0;
}

int workers_new(sd_event *event, unsigned max_threads, unsigned max, Workers **ret) {
        _cleanup_free_ Workers *w = NULL;
        int r;

        w = calloc(1, sizeof *w);
        if (!w)
                return -ENOMEM;
        w->max_threads = max_threads;
        w->max = max;
        if (pipe2(w->pipe, O_CLOEXEC | O_NONBLOCK) < 0)
                return -errno;
        r = sd_event_add_io(event, &w->source, w->pipe[0], EPOLLIN, on_work_done, w);
        if (r < 0) {
                safe_close(w->pipe[0]);
                safe_close(w->pipe[1]);
                return r;
        }
        *ret = TAKE_PTR(w);
        return 0;
}

void workers_drain(Workers *w) {
        if (!w)
                return;
        (void) fcntl(w->pipe[0], F_SETFL, 0);
        while (w->running > 0) {
                Work *work;

                if (read(w->pipe[0], &work, sizeof work) == sizeof work)
                        work_finish(work);
                else if (errno != EINTR)
                        abort();
        }
        (void) fcntl(w->pipe[0], F_SETFL, O_NONBLOCK);
}

Workers *workers_free(Workers *w) {
        if (!w)
                return NULL;
        /* The threads use what the done callbacks free: let them all finish first. */
        workers_drain(w);
        sd_event_source_disable_unref(w->source);
        safe_close(w->pipe[0]);
        safe_close(w->pipe[1]);
        free(w);
        return NULL;
}

int workers_run(Workers *w, WorkFunc work, WorkDone done, void *userdata) {
        Work *item;
        int r;

        if (w->running >= w->max)
                return -EMFILE;
        item = calloc(1, sizeof *item);
        if (!item)
                return -ENOMEM;
        *item = (Work) { .workers = w, .work = work, .done = done, .userdata = userdata };

        if (w->threads < w->max_threads) {
                r = work_start_thread(item);
                if (r < 0) {
                        free(item);
                        return r;
                }
        } else if (w->queue_tail)
                w->queue_tail = w->queue_tail->next = item;
        else
                w->queue_head = w->queue_tail = item;
        w->running++;
        return 0;
}

unsigned workers_running(Workers *w) {
        return w ? w->running : 0;
}
