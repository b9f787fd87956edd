/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>

#include "ctl-util.h"
#include "polkit-agent.h"

#define POLKIT_AGENT_BINARY_PATH "/usr/bin/pkttyagent"

/* How long to wait for the agent to register. pkttyagent normally needs milliseconds; the limit
 * only keeps a wedged polkitd from hanging cisternctl before it has even made its call. */
#define POLKIT_AGENT_REGISTER_TIMEOUT_MSEC (30 * 1000)

static pid_t agent_pid = 0;

static _Noreturn void agent_exec(int notify_fd, pid_t parent) {
        char pid_str[32], fd_str[32];

        /* Go away with us, even if we are killed before we can stop the agent. */
        if (prctl(PR_SET_PDEATHSIG, SIGTERM) < 0 || getppid() != parent)
                _exit(EXIT_FAILURE);

        /* The notify fd becomes 3 (dup2 also drops O_CLOEXEC); nothing else of ours leaks. */
        if (notify_fd != 3 && dup2(notify_fd, 3) < 0)
                _exit(EXIT_FAILURE);
        if (notify_fd == 3 && fcntl(3, F_SETFD, 0) < 0)
                _exit(EXIT_FAILURE);
        (void) close_range(4, ~0U, 0);

        /* Keep agent chatter out of output that may be piped into a JSON parser. */
        if (!isatty(STDOUT_FILENO))
                (void) dup2(STDERR_FILENO, STDOUT_FILENO);

        snprintf(pid_str, sizeof(pid_str), "%i", (int) parent);
        snprintf(fd_str, sizeof(fd_str), "%i", 3);
        execl(POLKIT_AGENT_BINARY_PATH, POLKIT_AGENT_BINARY_PATH,
              "--process", pid_str, "--notify-fd", fd_str, "--fallback", (char *) NULL);
        _exit(EXIT_FAILURE);
}

int polkit_agent_open(void) {
        int pipe_fd[2], r = 0;
        struct pollfd pfd;
        pid_t parent = getpid(), pid;

        if (agent_pid > 0 || geteuid() == 0 || !isatty(STDIN_FILENO))
                return 0;

        if (pipe2(pipe_fd, O_CLOEXEC) < 0)
                return -errno;

        pid = fork();
        if (pid < 0) {
                r = -errno;
                close(pipe_fd[0]);
                close(pipe_fd[1]);
                return r;
        }
        if (pid == 0)
                agent_exec(pipe_fd[1], parent);

        agent_pid = pid;
        close(pipe_fd[1]);

        /* The agent writes to the fd, or closes it by exiting, once it is registered or gave up. */
        pfd = (struct pollfd) { .fd = pipe_fd[0], .events = POLLIN };
        while (poll(&pfd, 1, POLKIT_AGENT_REGISTER_TIMEOUT_MSEC) < 0)
                if (errno != EINTR) {
                        r = -errno;
                        break;
                }

        close(pipe_fd[0]);
        return r;
}

void polkit_agent_close(void) {
        if (agent_pid <= 0)
                return;

        (void) kill(agent_pid, SIGTERM);
        (void) kill(agent_pid, SIGCONT);
        while (waitpid(agent_pid, NULL, 0) < 0 && errno == EINTR)
                ;
        agent_pid = 0;
}
