/* Entry of the oakuk test kernel: a multiboot v1 image like Unikraft's x86_64 QEMU kernels, which
 * QEMU's multiboot loader starts in flat 32-bit protected mode with interrupts off. */
#define MB_MAGIC 0x1BADB002
/* Page-aligned modules and a memory map, no a.out kludge (bit 16): QEMU then loads the ELF
 * program headers, as it does for Unikraft. */
#define MB_FLAGS 0x00000003

	.section .multiboot, "a"
	.balign 4
	.long MB_MAGIC
	.long MB_FLAGS
	.long -(MB_MAGIC + MB_FLAGS)

	.text
	.globl _start
	.type _start, @function
_start:
	cli
	cld
	/* The loader does not promise a zeroed .bss; keep EAX (magic) and EBX (info) across it. */
	mov %eax, %esi
	mov $__bss_start, %edi
	mov $__bss_end, %ecx
	sub %edi, %ecx
	xor %eax, %eax
	rep stosb
	mov $stack_top, %esp
	push %ebx
	push %esi
	call ukguest_main
1:	cli
	hlt
	jmp 1b

	.bss
	.balign 16
	.skip 16384
stack_top:

	.section .note.GNU-stack, "", @progbits
