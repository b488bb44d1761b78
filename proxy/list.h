/* Intrusive doubly linked list. A node is on at most one list at a time; a node
 * that is on no list points to itself, so removal is idempotent. */
#ifndef SY_LIST_H
#define SY_LIST_H

#include <stdbool.h>
#include <stddef.h>

typedef struct sy_list {
    struct sy_list *prev, *next;
} sy_list_t;

static inline void sy_list_init(sy_list_t *l) { l->prev = l->next = l; }
static inline bool sy_list_empty(const sy_list_t *l) { return l->next == l; }

static inline void sy_list_remove(sy_list_t *n)
{
    n->prev->next = n->next;
    n->next->prev = n->prev;
    n->prev = n->next = n;
}

static inline void sy_list_push_back(sy_list_t *head, sy_list_t *n)
{
    sy_list_remove(n);
    n->prev = head->prev;
    n->next = head;
    head->prev->next = n;
    head->prev = n;
}

#define sy_container_of(ptr, type, member) ((type *)((char *)(ptr)-offsetof(type, member)))

#endif
